# The device commands of this session's runs (bash commands.sh runN on the device tool's machine).
# run1's old_s11/ was 'git archive HEAD tpa_compress bench/...' of ee85525 (the tenth-session kernel).
# run2's TPA_WG_TRIGTAB switch was a temporary build knob (angle tables on/off), removed before db1edac.
#!/bin/bash
# session-11 device script (not committed)
set -u
python -c "import torch, yaml, safetensors, typer, rich; print(torch.__version__, torch.cuda.get_device_name())" 2>&1 | tail -1
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
K="python bench/bench_decode_kernel.py --contexts 32768 --batches 1,8,32"
case "$1" in
run1)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  $K --kinds latent/latent --backend cuda --k-scale 0,1 2>&1 | grep -v Warn > $OUT/kernel_new.txt
  TPA_WG_TRIGTAB=0 $K --kinds latent/latent --backend cuda --k-scale 1 2>&1 | grep -v Warn > $OUT/kernel_notab.txt
  $K --kinds full/full 2>&1 > $OUT/kernel_full.txt
  (cd old_s11 && $K --kinds latent/latent --backend cuda --k-scale 1 2>&1 | grep -v Warn > $OUT/kernel_old.txt)
  cat $OUT/kernel_*.txt | cut -c1-40,120-
  ;;
run2)
  for tt in 1 0; do TPA_WG_TRIGTAB=$tt $K --kinds latent/latent --backend cuda --k-scale 1 2>&1 | grep -v Warn > $OUT/kernel_tab$tt.txt; done
  grep -o "b[0-9]* .*us " $OUT/kernel_tab*.txt | awk '{print $1, $(NF-1)}'
  export TPA_WG_TRIGTAB=0
  for L in converted original; do for B in 1 32; do
    python bench/profile_decode.py --model 270m --layout $L --batch $B --context 32768 --top 30 > $OUT/prof_${L}_b$B.txt 2>&1; head -1 $OUT/prof_${L}_b$B.txt
  done; done
  python bench/bench_generate.py --check --models 270m,1b --batches 1,32 --contexts 128,32768 --no-hf --layouts original,converted --out $OUT/e2e.json > $OUT/e2e.log 2>&1
  tail -30 $OUT/e2e.log
  ;;
run3)
  TPA_TEST_DEVICE=cuda timeout 200 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  python bench/bench_decode_kernel.py --contexts 8192,16384,32768,65536 --batches 1 --kinds latent/latent --backend cuda --k-scale 1 2>&1 | grep -v Warn > $OUT/kernel_sweep_latent.txt
  python bench/bench_decode_kernel.py --contexts 8192,16384,32768,65536 --batches 1 --kinds full/full 2>&1 | grep -v Warn > $OUT/kernel_sweep_full.txt
  grep -o "T[0-9]* .*us " $OUT/kernel_sweep_*.txt | awk '{print $1, $(NF-1)}'
  python bench/profile_decode.py --model 270m --layout converted --batch 1 --context 32768 --top 30 > $OUT/prof_converted_b1.txt 2>&1; head -1 $OUT/prof_converted_b1.txt
  python bench/profile_decode.py --model 270m --layout converted --batch 32 --context 32768 --top 30 > $OUT/prof_converted_b32.txt 2>&1; head -1 $OUT/prof_converted_b32.txt
  python bench/bench_generate.py --check --models 270m,1b --batches 1,32 --contexts 128,32768 --no-hf --layouts original,converted --out $OUT/e2e.json > $OUT/e2e.log 2>&1
  grep "gpu check" $OUT/e2e.log
  grep -o '"model": "[a-z0-9]*", "batch": [0-9]*, "context": [0-9]*.\{0,80\}"layout": "[a-z]*".\{0,120\}tok_s": [0-9.]*' $OUT/e2e.log | sed 's/"runner.*layout"//; s/, "ranks.*tok_s"//'
  ;;
run4)
  python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1,32 --kinds latent/latent --backend triton,cuda --k-scale 0,1 2>&1 | grep -v Warn > $OUT/kernel_prologue.txt
  cut -c1-20,100-170 $OUT/kernel_prologue.txt
  python bench/bench_generate.py --models 270m --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1.json > $OUT/e2e_b1.log 2>&1
  grep -o '"model": "[a-z0-9]*", "batch": [0-9]*, "context": [0-9]*.\{0,80\}"layout": "[a-z]*".\{0,120\}tok_s": [0-9.]*' $OUT/e2e_b1.log | sed 's/"runner.*layout"//; s/, "ranks.*tok_s"//'
  ;;
esac
