"""A script for tests/unit/test_forkserver.py: prints what a process sees, then exits as asked."""

import os
import sys

# a real interpreter pays for this import; a forked child has it already
import torch  # noqa: F401 (preload)

print(f"argv={sys.argv[1:]} cwd={os.getcwd()} probe={os.environ.get('PROBE')} main={__name__}")
print(f"to stderr {sys.stdin.read() or '(no input)'}", file=sys.stderr)
sys.exit(sys.argv[1] if sys.argv[1:] and not sys.argv[1].isdigit() else int(sys.argv[1]) if sys.argv[1:] else 0)
