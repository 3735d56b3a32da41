#!/usr/bin/env bash
# The GPU tests this change touches, after then before, on one lease: put after.tgz and before.tgz
# (git archive <commit> tpa_compress tests bench/bench_generate.py pyproject.toml | gzip) beside this script:
# after = branch plan, before = main at the same point (the commit plan last merged).
S=$(cd "$(dirname "$0")" && pwd); W=/tmp/planw; rm -rf $W; mkdir -p $W/before $W/after
tar -xzf $S/after.tgz -C $W/after; tar -xzf $S/before.tgz -C $W/before
export TPA_TEST_DEVICE=cuda PYTHONUNBUFFERED=1 TPA_KERNEL_CACHE=$W/kcache
python -c "import torch,triton;print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
# the after tree takes the test device as a pytest option; a before tree from before the
# conftest fixtures (3bd507c and older) reads TPA_TEST_DEVICE instead
t() { local tree=$1 lim=$2; shift 2; local dev=(); [[ $tree == after ]] && dev=(--device cuda)
      echo "=== $tree: $*"; (cd $W/$tree && PYTHONPATH=$W/$tree timeout $lim python -m pytest -q -x -p no:cacheprovider "${dev[@]}" "$@" 2>&1 | tail -25); }
t after 40 tests/test_kernel_cache.py tests/test_runtime_grouped.py
t after 45 tests/test_cuda_decode.py -k "decode_path or prefetch"
t before 35 tests/test_cuda_decode.py -k "decode_path or prefetch"
t after 25 tests/test_generate_cli.py -k "summarises and cuda"
