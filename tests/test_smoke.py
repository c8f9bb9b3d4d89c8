def test_runs_echo(senv):
    r = senv.sh("echo hello; id -u")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == b"hello"
