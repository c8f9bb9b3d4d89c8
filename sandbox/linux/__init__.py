"""The Linux backend: bubblewrap, seccomp, the Landlock fallback (see sandbox.backend)."""
