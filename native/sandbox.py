#!/usr/bin/env python3
"""The `sandbox` command when no C compiler could build native/client.c.

The wheel then ships this script instead of the native client: every run
goes direct, exactly like `sandbox-direct` (hatchling rewrites the line
above to `#!python`, and pip to the environment's interpreter).
"""
import sys

from sandbox.__main__ import main

if __name__ == "__main__":
    # what pip's console-script wrapper does to argv[0]
    sys.argv[0] = sys.argv[0].removesuffix(".exe")
    sys.exit(main())
