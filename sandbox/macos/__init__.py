"""The macOS backend: a Seatbelt profile run by ``/usr/bin/sandbox-exec``.

``seatbelt.build(policy, context, command)`` is pure: Policy plus the host
facts in ``seatbelt.Context`` give the profile text, its ``-D`` parameters
and the argv.  ``hostfacts.gather`` makes the Context (it reads the
filesystem), ``parity`` says how each Policy field is enforced here and on
Linux, and ``run`` is the darwin run path.  docs/macos.md describes it all.
"""
