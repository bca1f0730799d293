"""Large data sets on one node: start-up decode into the node's cache file, per-rank memory, data cost.

    python benchmarks/data_scale.py [--sizes 20000,100000,200000 | --quick] [--sources folder,lmdb]
        [--image_size 64] [--steps 300] [--batch_size 64] [--work DIR] [--keep] [--json OUT]

For each size N it writes a synthetic folder of N PNGs (random but compressible: upscaled 8x8
noise, so they decode like photos, not like noise) with a pool of processes, and the same images
as an LMDB (datasets/lmdb_export.py, encoded values). Then, for each source, three runs of two
ranks on this node (torch.multiprocessing, gloo, joined through trainkit.dist.init as torchrun's
variables), each with $TRAINKIT_DATA_CACHE_MB=0 so every size goes through the node's cache file:

  1 decoder   $TRAINKIT_DATA_DECODERS=1, an empty cache folder: the single decoder of old
  2 decoders  every rank decodes its block, an empty cache folder
  reuse       the same again over the 2-decoder run's cache: nothing should be decoded

Each rank reports its start-up (load_dataset to a barrier), how many images it decoded, its
/proc/self/status VmRSS, RssAnon and RssFile (the largest seen while taking batches, and the
anonymous part before the data set was loaded), and the mean time of one `Batches` step (index
the mapped images, convert to float, flip). Prints one row per run and the ratio of the
1-decoder start-up to the 2-decoder one. Image files are in the page cache for every run (just
written): the start-up measured is decoding, not reading a cold disk. Work files live in a
temporary folder (or --work) removed at the end unless --keep.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "datasets")]

DEFAULT_SIZES = "20000,100000,200000"
QUICK_SIZES = "2000,5000"
PER_FOLDER = 10000  # images per sub-folder: no directory of 200k entries
WORLD = 2
RUNS = (("1 decoder", "1", "single"), ("2 decoders", "0", "shared"), ("reuse", "0", "shared"))


def _write_png(job):
    import numpy as np
    from PIL import Image

    root, i, size = job
    rng = np.random.default_rng(i)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    path = os.path.join(root, f"{i // PER_FOLDER:03d}", f"{i % 10}_{i:07d}.png")
    small.resize((size, size), Image.BICUBIC).save(path)


def build_folder(root: str, n: int, size: int) -> float:
    """N PNGs under root/NNN/, written by one process per core; the seconds it took."""
    began = time.perf_counter()
    for k in range(-(-n // PER_FOLDER)):
        os.makedirs(os.path.join(root, f"{k:03d}"), exist_ok=True)
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_png, ((root, i, size) for i in range(n)), chunksize=256):
            pass
    return time.perf_counter() - began


def build_lmdb(folder: str, dst: str) -> float:
    import lmdb_export
    from trainkit import data

    began = time.perf_counter()
    lmdb_export.export(data.list_image_files(folder), dst, "encoded", 0)
    return time.perf_counter() - began


def _memory() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def _rank(rank: int, port: int, source: str, image_size: int, steps: int, batch_size: int, out_dir: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)  # one core per rank, as one GPU per rank
    from trainkit import data, dist

    dist.init()
    before = _memory()
    began = time.perf_counter()
    d = data.load_dataset(source, image_size)
    dist.barrier()
    startup = time.perf_counter() - began
    loaded = _memory()
    batches = data.Batches(d, batch_size, seed=0, random_flip=True)
    for _ in range(10):
        next(batches)
    peak = dict(loaded)
    began = time.perf_counter()
    for k in range(steps):
        next(batches)
        if k % 25 == 0:
            peak = {key: max(v, peak.get(key, 0)) for key, v in _memory().items()}
    step_s = (time.perf_counter() - began) / steps
    peak = {key: max(v, peak.get(key, 0)) for key, v in _memory().items()}
    result = dict(rank=rank, startup_s=startup, step_ms=step_s * 1e3, before=before, loaded=loaded, peak=peak,
                  **{k: v for k, v in d.decode.items() if k != "seconds"}, decode_s=d.decode["seconds"])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.shutdown(wait_for_peers=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(source: str, cache: str, decoders: str, image_size: int, steps: int, batch_size: int) -> list:
    """Two ranks load `source` through the node cache in `cache` and take batches; each rank's report."""
    import torch.multiprocessing as mp

    os.environ.update(TRAINKIT_DATA_CACHE=cache, TRAINKIT_DATA_CACHE_MB="0", TRAINKIT_DATA_DECODERS=decoders,
                      OMP_NUM_THREADS="1")
    out_dir = tempfile.mkdtemp(prefix="ranks-", dir=os.path.dirname(cache))
    try:
        mp.start_processes(_rank, args=(_free_port(), source, image_size, steps, batch_size, out_dir), nprocs=WORLD,
                           start_method="spawn")
        reports = []
        for r in range(WORLD):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                reports.append(json.load(f))
        return reports
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0] if names else 'unknown CPU'} x {len(names)}"


def row(n, source, label, reports) -> dict:
    startup = max(r["startup_s"] for r in reports)
    return dict(
        images=n, source=source, run=label, startup_s=round(startup, 2), img_per_s=round(n / startup),
        decoded=[r["decoded"] for r in reports], reused=reports[0]["reused"],
        anon_mib=[round(r["peak"]["RssAnon"]) for r in reports],
        anon_growth_mib=[round(r["peak"]["RssAnon"] - r["before"]["RssAnon"]) for r in reports],
        file_mib=[round(r["peak"]["RssFile"]) for r in reports],
        step_ms=round(max(r["step_ms"] for r in reports), 2), cache=reports[0]["path"],
        load=round(os.getloadavg()[0], 2),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help=f"comma-separated image counts (default {DEFAULT_SIZES})")
    p.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, for a fast look")
    p.add_argument("--sources", default="folder,lmdb", help="folder, lmdb or both")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300, help="batches timed per rank")
    p.add_argument("--batch_size", type=int, default=64, help="per rank")
    p.add_argument("--work", default=None, help="folder for the data sets and caches (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args(argv)
    try:
        sizes = [int(s) for s in (a.sizes or (QUICK_SIZES if a.quick else DEFAULT_SIZES)).split(",")]
    except ValueError:
        p.error(f"--sizes: {a.sizes!r} is not a comma-separated list of whole numbers")
    sources = a.sources.split(",")
    if not sizes or min(sizes) < WORLD * a.batch_size or not set(sources) <= {"folder", "lmdb"}:
        p.error(f"--sizes must be at least {WORLD * a.batch_size} (one global batch) and --sources folder/lmdb")
    if a.work:
        os.makedirs(a.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix="data_scale-", dir=a.work)
    print(f"{cpu_model()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}; work folder {work}",
          flush=True)
    rows = []
    try:
        for n in sizes:
            folder = os.path.join(work, f"folder-{n}")
            print(f"{n} images: folder written in {build_folder(folder, n, a.image_size):.1f} s", flush=True)
            paths = {"folder": folder}
            if "lmdb" in sources:
                paths["lmdb"] = os.path.join(work, f"lmdb-{n}", "train.lmdb")
                print(f"{n} images: LMDB written in {build_lmdb(folder, paths['lmdb']):.1f} s", flush=True)
            for source in sources:
                caches = {}
                for label, decoders, cache in RUNS:
                    caches.setdefault(cache, os.path.join(work, f"cache-{n}-{source}-{cache}"))
                    reports = run_ranks(paths[source], caches[cache], decoders, a.image_size, a.steps, a.batch_size)
                    rows.append(row(n, source, label, reports))
                    print(json.dumps(rows[-1]), flush=True)
                    if label == "1 decoder" and not a.keep:
                        shutil.rmtree(caches[cache])  # disk: one cache of this size at a time
            if not a.keep:
                shutil.rmtree(folder)
                shutil.rmtree(os.path.dirname(paths.get("lmdb", folder)), ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| images | source | run | start-up s | img/s | decoded per rank | anon MiB per rank (growth) "
          "| file MiB per rank | data ms/step | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        anon = ", ".join(f"{x} ({g:+d})" for x, g in zip(r["anon_mib"], r["anon_growth_mib"]))
        print(f"| {r['images']} | {r['source']} | {r['run']} | {r['startup_s']} | {r['img_per_s']} | "
              f"{', '.join(map(str, r['decoded']))} | {anon} | {', '.join(map(str, r['file_mib']))} | "
              f"{r['step_ms']} | {r['load']} |")
    print()
    for n in sizes:
        for source in sources:
            one, two = (next(r for r in rows if (r["images"], r["source"], r["run"]) == (n, source, label))
                        for label in ("1 decoder", "2 decoders"))
            print(f"{n} {source}: start-up 1 decoder / 2 decoders = {one['startup_s'] / two['startup_s']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(cpu=cpu_model(), cores=os.cpu_count(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
