# vad-sweeps recipes. Fresh machine: ./dev RECIPE (installs into .venv first).

set dotenv-load := false

python := ".venv/bin/python"
data_root := env_var_or_default("VAD_DATA_ROOT", "../shared/data")

# list recipes
default:
    @just --list

# the fast test suite (CI runs this), inside a private network namespace (see `netns`)
[positional-arguments]
test *ARGS:
    @{{just_executable()}} netns {{python}} -m pytest -q "$@"

# Run a command where Ray's servers can bind only loopback: Ray 2.60 binds every interface, so where unshare
# allows it the command runs in a private network namespace whose only interface is loopback.
# Arguments travel as "$@" (positional-arguments), so `just test -k "a or b"` keeps its quoting.
[private]
[positional-arguments]
netns *CMD:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v unshare >/dev/null && command -v ip >/dev/null && unshare -rn true 2>/dev/null; then
      exec unshare -rn sh -c 'ip link set lo up && exec "$@"' sh "$@"
    fi
    echo "note: no private network namespace here (unshare -rn); Ray binds this machine's interfaces" >&2
    exec "$@"

# Head on 127.0.0.1, worker on 127.0.0.2 in its own mount namespace, 1 CPU each, token auth, inside the private
# network namespace of `just test`. Checks trials on both nodes, one shared results folder and stage cache, and
# that a results folder only the head sees fails the job naming the node (tests/cluster/test_two_nodes.py); then
# the faults (tests/cluster/test_faults.py, not in `just test`): the worker node lost mid-trial, a stage's builder
# killed while another trial waits on its lock, the driver killed and the sweep resumed as a job.
# a real two-node Ray cluster on this machine, `ray job submit --working-dir .` of ablation-paths, and faults
[positional-arguments]
cluster-test *ARGS:
    {{just_executable()}} test -m cluster tests/cluster "$@"

# long accuracy runs, on purpose
test-slow *ARGS:
    {{python}} -m pytest -q -m slow {{ARGS}}

# one smoke trial on the bundled synthetic benchmark (no data needed)
smoke out="runs/smoke":
    {{python}} -m vadcore run --benchmark synthetic --profile smoke --out {{out}}

# one trial on a benchmark: just trial ped2 smoke
trial benchmark="ped2" profile="smoke" *ARGS:
    {{python}} -m vadcore run --benchmark {{benchmark}} --data-root {{data_root}} --profile {{profile}} --out runs/{{benchmark}}-{{profile}} {{ARGS}}

# write shards for a benchmark: just shard ped2 smoke
shard benchmark="ped2" profile="smoke":
    {{python}} -m vadcore shard {{benchmark}} --data-root {{data_root}} --profile {{profile}}

# print Table 1 shapes and parameter counts
describe profile="paper" benchmark="synthetic":
    {{python}} -m vadcore describe --benchmark {{benchmark}} --profile {{profile}}

# every performance figure in one run, kept in results/bench/ (bench.parquet, report.md): just bench | just bench --quick
[positional-arguments]
bench *ARGS:
    @{{just_executable()}} netns {{python}} benchmarks/bench.py "$@"

# run a sweep (synthetic benchmark, smoke profile unless the file says otherwise): just sweep ablation-paths
sweep NAME *ARGS:
    {{python}} -m sweeps run {{NAME}} {{ARGS}}

# list the sweeps in sweeps/
sweeps:
    {{python}} -m sweeps list

# tables and report of a finished sweep, from results/NAME/ alone (no Ray): just report ablation-paths
report NAME *ARGS:
    {{python}} -m sweeps report {{NAME}} {{ARGS}}

# screenshot results/NAME/report.html in headless Chromium (apt-get install -y chromium) to results/NAME/report.png
report-screenshot NAME:
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync --user-data-dir=$(mktemp -d) --screenshot={{justfile_directory()}}/results/{{NAME}}/report.png --window-size=1400,2400 file://{{justfile_directory()}}/results/{{NAME}}/report.html
    @echo "wrote results/{{NAME}}/report.png"

# sweep overhead: wall ÷ distinct stage time, Ray's per-trial overhead (TINY ablation-paths in a temp folder); or: just bench-sweep --from-results results/ablation-paths
bench-sweep *ARGS:
    {{python}} benchmarks/bench_sweep.py {{ARGS}}

# first contact with a GPU, one bounded command (8 min): device, /dev/shm, imports, then the paper's Ped2 and Avenue
# geometries through DeepSpeed bf16: ms/step, samples/s, TFLOP/s, peak memory, AUCs, errmaps, one JSON line (runs/gpu-check/ or $OUT).
# On a node without the project's venv: python3 benchmarks/gpu_check.py --out "$OUT" (uses the carry .gpu-pack/)
gpu-check *ARGS:
    {{python}} benchmarks/gpu_check.py --data-root {{data_root}} {{ARGS}}

# the carry for a GPU node with a CUDA torch and little else (.gpu-pack/: wheels, Ped2 data pack); prints its size against 64 MiB
gpu-pack *ARGS:
    {{python}} benchmarks/gpu_pack.py --data-root {{data_root}} {{ARGS}}
