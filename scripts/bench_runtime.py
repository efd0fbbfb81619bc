#!/usr/bin/env python3
"""Time one ONNX graph of the backbone with onnxruntime and OpenVINO on the CPU.

scripts/bench-runtime.sh runs this in .cache/bench-runtime-venv on the graph that
`binann-embed-bench --write-onnx` writes, beside binann's own runtimes; it also runs alone:

    python scripts/bench_runtime.py MODEL.onnx [--seconds 4] [--sizes 224,112,64] [--batch 16]
        [--threads N] [--warmup 1] [--runtimes ort,ov-throughput,ov-latency]
        [--ov-precision f32|bf16|f16|default]

Runtimes:
  ort            onnxruntime, CPU execution provider, ORT_ENABLE_ALL, sequential execution,
                 intra-op threads = --threads (default: the cores this process may use), inter-op 1;
                 the graph's dynamic dimensions are left dynamic.
  ov-throughput  OpenVINO CPU plugin, PERFORMANCE_HINT=THROUGHPUT, an AsyncInferQueue holding the
                 plugin's OPTIMAL_NUMBER_OF_INFER_REQUESTS requests, all kept busy.
  ov-latency     OpenVINO CPU plugin, PERFORMANCE_HINT=LATENCY, one synchronous request.
  OpenVINO gets the graph reshaped to the static [batch, 3, size, size] of each case before it
  compiles it, and chooses its own threads. Its inference precision is f32 like the other
  runtimes' unless --ov-precision says otherwise: left to itself ("default") the CPU plugin runs
  in bf16 on CPUs with AVX-512 BF16 or AMX, which is faster and less exact.

Each case feeds random float32 input (uniform in [0, 1)) of [batch, 3, size, size] to the graph's
first input, whatever it is named. Warm-up: at least 2 batches and --warmup seconds. Then whole
batches run until --seconds have passed (queued batches are waited for and counted); images/s =
images / elapsed.

Output: one tab-separated line per case on stdout,
    runtime  size  images/s  other-CPU  note
where other-CPU is how many CPUs' worth the rest of the machine used during the timed window (from
/proc/stat, less this process's own CPU time), so a disturbed window shows, and note holds the
threads, streams and requests used. A case that fails prints "failed" as its rate and goes on.
Progress goes to stderr.
"""
import argparse
import os
import sys
import time

import numpy as np

TICK = os.sysconf('SC_CLK_TCK')


def busy_seconds():
    """CPU seconds the whole machine has been busy, and this process's own CPU seconds."""
    with open('/proc/stat') as f:
        fields = [int(v) for v in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    own = os.times()
    return (user + nice + system + irq + softirq) / TICK, own.user + own.system


def measure(submit, batch, seconds, warmup, finish=lambda: None):
    """Images per second of `submit` (one batch per call) and the other processes' CPU use."""
    started, runs = time.perf_counter(), 0
    while runs < 2 or time.perf_counter() - started < warmup:
        submit()
        runs += 1
    finish()
    machine0, own0 = busy_seconds()
    images, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        submit()
        images += batch
    finish()
    elapsed = time.perf_counter() - t0
    machine1, own1 = busy_seconds()
    other = max(0.0, (machine1 - machine0) - (own1 - own0)) / elapsed
    return images / elapsed, other


def check_output(out, batch):
    if out.ndim != 2 or out.shape[0] != batch:
        raise RuntimeError(f'output shape {list(out.shape)}, expected [{batch}, width]')
    return out.shape[1]


def time_ort(path, size, batch, threads, a):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: random_input(batch, size)}
    output = session.get_outputs()[0].name
    width = check_output(session.run([output], feed)[0], batch)
    rate, other = measure(lambda: session.run([output], feed), batch, a.seconds, a.warmup)
    return rate, other, f'{threads} intra-op threads, output width {width}'


def compile_ov(path, size, batch, hint, precision):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(path)
    model.reshape({model.inputs[0].get_any_name(): [batch, 3, size, size]})
    config = {'PERFORMANCE_HINT': hint}
    if precision != 'default':
        config['INFERENCE_PRECISION_HINT'] = precision
    compiled = core.compile_model(model, 'CPU', config)
    settings = []
    for key, label in (('INFERENCE_NUM_THREADS', 'threads'), ('NUM_STREAMS', 'streams'),
                       ('INFERENCE_PRECISION_HINT', 'precision')):
        try:
            value = compiled.get_property(key)
            settings.append(f'{label} {getattr(value, "get_type_name", lambda: value)()}')
        except Exception:  # noqa: BLE001 - a property this OpenVINO version does not report
            pass
    return ov, compiled, settings


def time_ov_throughput(path, size, batch, a):
    ov, compiled, settings = compile_ov(path, size, batch, 'THROUGHPUT', a.ov_precision)
    requests = int(compiled.get_property('OPTIMAL_NUMBER_OF_INFER_REQUESTS'))
    x = random_input(batch, size)
    width = check_output(compiled.create_infer_request().infer({0: x})[0], batch)
    queue = ov.AsyncInferQueue(compiled, requests)
    # start_async waits for a free request when all are busy, so the loop keeps every request fed;
    # wait_all at the end makes the elapsed time cover every batch counted.
    rate, other = measure(lambda: queue.start_async({0: x}), batch, a.seconds, a.warmup, finish=queue.wait_all)
    return rate, other, ', '.join(settings + [f'{requests} requests', f'output width {width}'])


def time_ov_latency(path, size, batch, a):
    _, compiled, settings = compile_ov(path, size, batch, 'LATENCY', a.ov_precision)
    request = compiled.create_infer_request()
    x = random_input(batch, size)
    width = check_output(request.infer({0: x})[0], batch)
    rate, other = measure(lambda: request.infer({0: x}), batch, a.seconds, a.warmup)
    return rate, other, ', '.join(settings + ['1 request', f'output width {width}'])


def random_input(batch, size):
    return np.random.default_rng(size).random((batch, 3, size, size), dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('model', help='ONNX graph; its first input takes float32 [N, 3, H, W]')
    ap.add_argument('--seconds', type=float, default=4.0, help='timed seconds per case (default 4)')
    ap.add_argument('--warmup', type=float, default=1.0, help='least warm-up seconds per case (default 1)')
    ap.add_argument('--sizes', default='224,112,64', help='input sides in pixels (default 224,112,64)')
    ap.add_argument('--batch', type=int, default=16, help='images per batch (default 16)')
    ap.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)),
                    help="onnxruntime's intra-op threads (default: the cores this process may use)")
    ap.add_argument('--runtimes', default='ort,ov-throughput,ov-latency')
    ap.add_argument('--ov-precision', default='f32', choices=['f32', 'bf16', 'f16', 'default'],
                    help="OpenVINO's inference precision (default f32; 'default': the plugin's choice)")
    a = ap.parse_args()
    runners = {
        'ort': lambda size: time_ort(a.model, size, a.batch, a.threads, a),
        'ov-throughput': lambda size: time_ov_throughput(a.model, size, a.batch, a),
        'ov-latency': lambda size: time_ov_latency(a.model, size, a.batch, a),
    }
    runtimes = [r for r in a.runtimes.split(',') if r]
    unknown = [r for r in runtimes if r not in runners]
    if unknown:
        sys.exit(f'bench_runtime.py: unknown runtime {", ".join(unknown)} (known: {", ".join(runners)})')
    print('# runtime\tsize\timages/s\tother-CPU\tnote', flush=True)
    for size in [int(s) for s in a.sizes.split(',') if s]:
        for runtime in runtimes:
            try:
                rate, other, note = runners[runtime](size)
            except Exception as e:  # noqa: BLE001 - report the case and go on with the next
                print(f'bench_runtime.py: {runtime} at {size} px failed: {type(e).__name__}: {e}', file=sys.stderr)
                print(f'{runtime}\t{size}\tfailed\t-\t{type(e).__name__}', flush=True)
                continue
            print(f'  {runtime:<13} {size:>3} px {rate:8.1f} images/s  ({note}; other processes {other:.2f} CPUs)',
                  file=sys.stderr, flush=True)
            print(f'{runtime}\t{size}\t{rate:.1f}\t{other:.2f}\t{note}', flush=True)


if __name__ == '__main__':
    main()
