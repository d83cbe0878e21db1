"""Print which implementation of the dbp ops is live.

    python -m dbp_core.ops [--require cpu|cuda]

With --require, exit 1 unless the compiled extension is loaded (and, for
``cuda``, has CUDA kernels): CI uses it to prove the build it just made.
"""
import argparse
import sys

import torch

from . import backend


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--require", choices=["cpu", "cuda"], help="fail unless this extension build is live")
    args = p.parse_args(argv)
    live = backend()
    print(f"dbp ops backend: {live} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    if args.require and (not live.startswith("extension") or args.require not in live):
        print(f"error: required the {args.require} extension, live backend is '{live}'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
