"""benchmarks/gpu_check.sh: the prepared GPU check, run here as its --dry_run on the CPU (every
family x precision trained through launch/run.sh, a gloo torchrun of 2 ranks, FLOPs, DDGAN
sampling, both FID feature extractors), and its parts in process: the table's atomic write,
img/s from progress.csv rows, the peak table, a failed job as a row, bad flags."""

import importlib.util
import os
import subprocess

import pytest

import helpers

FAMILIES = ("improved_diffusion", "ddgan", "dcgan")
PRECISIONS = ("fp32", "fp16", "bf16")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", helpers.ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_table(text):
    """The results table's rows as dicts keyed by its header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1].strip("|").split("|")) == {"---"}
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.mark.slow
def test_dry_run_writes_every_row_ok(tmp_path):
    out = tmp_path / "x.md"
    proc = subprocess.run(["bash", str(helpers.ROOT / "benchmarks" / "gpu_check.sh"), "--dry_run", "--out", str(out),
                           "--workdir", str(tmp_path / "work")],
                          cwd=str(tmp_path), env=helpers.test_env(), capture_output=True, text=True,
                          timeout=helpers.MAX_TIMEOUT)
    assert proc.returncode == 0, helpers.describe(proc)
    assert sorted(os.listdir(tmp_path)) == ["work", "x.md"]  # the table, and no temp file beside it
    text = out.read_text()
    assert "mode: --dry_run" in text and "device: cpu" in text
    rows = parse_table(text)
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    train = {r["job"]: r for r in rows if r["section"] == "train"}
    for family in FAMILIES:
        for precision in PRECISIONS:
            r = train[f"{family}-{precision}"]
            assert (r["family"], r["precision"], r["compile"]) == (family, precision, "no")
            assert r["launcher"] == "local x 1 (no group)"
            assert float(r["img/s"]) > 0 and float(r["GFLOP/img"]) > 0 and float(r["seconds"]) > 0
            assert float(r["TFLOP/s"]) * 1e12 == pytest.approx(float(r["GFLOP/img"]) * 1e9 * float(r["img/s"]),
                                                                rel=2e-3)
            assert r["MFU"] == "n/a"  # a CPU has no entry in the peak table
            assert r["note"].startswith("4 steps;")
    compiled = train["dcgan-fp32-compiled"]  # the compile column is real: a --compile run
    assert compiled["compile"] == "yes" and float(compiled["img/s"]) > 0
    assert train["dcgan-fp32-torchrun2"]["launcher"] == "torchrun x 2 (gloo)"
    assert float(train["dcgan-fp32-torchrun2"]["img/s"]) > 0
    flops = {r["job"]: r for r in rows if r["section"] == "flops"}
    assert sorted(flops) == sorted(FAMILIES) and all(float(r["GFLOP/img"]) > 0 for r in flops.values())
    # a bigger network costs more FLOPs per image: the U-Net's > DCGAN's
    assert float(flops["improved_diffusion"]["GFLOP/img"]) > float(flops["dcgan"]["GFLOP/img"])
    (sample,) = [r for r in rows if r["section"] == "sample"]
    assert float(sample["img/s"]) > 0 and "16 images" in sample["note"]
    fid = {r["job"]: r for r in rows if r["section"] == "fid"}
    assert sorted(fid) == ["evaluations", "pytorch-fid"]
    for r in fid.values():
        assert float(r["img/s"]) > 0 and "8 images, dims 64, random weights" in r["note"]
        # the same weights and images: the two tools' features agree
        assert float(r["note"].split("max abs mu diff ")[1].split(";")[0]) < 1e-4
    samples = list((tmp_path / "work" / "sample-ddgan").glob("**/samples_*.npz"))
    assert len(samples) == 1


def test_table_is_replaced_atomically_or_not_at_all(tmp_path, monkeypatch):
    gc = _module()
    out = tmp_path / "r.md"
    gc.write_atomic(str(out), "first\n")
    assert out.read_text() == "first\n"

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(gc.os, "replace", broken)
    with pytest.raises(OSError):
        gc.write_atomic(str(out), "second\n")
    assert out.read_text() == "first\n" and os.listdir(tmp_path) == ["r.md"]  # old table kept, no temp file


def test_img_per_sec_from_rows():
    gc = _module()
    logged = [{"samples": "8", "img_per_sec": "1.0"}, {"samples": "16", "img_per_sec": "30"},
              {"samples": "24", "img_per_sec": "10"}, {"samples": "32", "img_per_sec": "20"}]
    assert gc.img_per_sec(logged, []) == (20.0, "progress.csv img_per_sec (median)")  # first row left out
    # without the column: images between the first and last row over the time between their tables
    rows = [{"samples": "8"}, {"samples": "16"}, {"samples": "40"}]
    rate, how = gc.img_per_sec(rows, [10.0, 11.0, 12.0])
    assert rate == pytest.approx(16.0) and how.startswith("samples / time")
    with pytest.raises(gc.JobFailed, match="need 2 or more"):
        gc.img_per_sec(rows[:1], [10.0])


def test_peak_table_by_device_name():
    gc = _module()
    assert gc.peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert gc.peak_tflops("NVIDIA H100 PCIe", "fp16") == 756.0
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 494.7
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == 156.0
    assert gc.peak_tflops("Tesla T4", "bf16") is None


def test_a_failed_job_is_a_row_with_its_last_error_line(tmp_path):
    gc = _module()
    check = _check(gc, tmp_path)
    check.train("dcgan", "fp32", str(tmp_path / "no_such_folder"), "local", 1)
    check.train("dcgan", "bf16", str(tmp_path / "no_such_folder"), "local", 1)  # the next job still runs
    rows = parse_table(check.markdown(1.0))
    assert [(r["job"], r["status"]) for r in rows] == [("dcgan-fp32", "failed"), ("dcgan-bf16", "failed")]
    assert all(r["note"].startswith("exit 2: ") and "no_such_folder" in r["note"] for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["--inception_weights", "/no/such/w.pth"], "--inception_weights /no/such/w.pth: no such file"),
    (["--data_dir", "/no/such/dir"], "--data_dir /no/such/dir: no such folder"),
    (["--steps", "3", "--log_interval", "2"], "--steps 3 must be at least twice --log_interval 2"),
    (["--steps", "0"], "--steps 0: must be positive"),
])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    gc = _module()
    out = tmp_path / "x.md"
    with pytest.raises(SystemExit) as e:
        gc.main(["--dry_run", "--out", str(out), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not out.exists()


def _check(gc, tmp_path):
    args = gc.build_parser().parse_args(["--dry_run", "--workdir", str(tmp_path)])
    for name, (_, dry) in gc.DEFAULTS.items():
        setattr(args, name, dry)
    check = gc.Check(args)
    check.env = helpers.test_env()
    return check


def test_mfu_is_flops_per_image_times_img_per_sec_over_the_devices_peak(tmp_path):
    """The arithmetic of a GPU row, on a CPU run told it ran on one H200."""
    gc = _module()
    check = _check(gc, tmp_path)
    check.info = {"cuda": True, "gpus": 1, "device": "NVIDIA H200", "torch": "x"}
    check.flops["dcgan"] = {"flops_per_image": 2e9}
    digits = tmp_path / "digits"
    proc = helpers.script("datasets/digits.py", "--out", digits, "--size", 16)
    assert proc.returncode == 0, helpers.describe(proc)
    check.train("dcgan", "bf16", str(digits / "train"), "local", 1)
    (row,) = parse_table(check.markdown(1.0))
    assert row["status"] == "ok", row
    achieved = 2e9 * float(row["img/s"])
    assert float(row["MFU"].rstrip("%")) == pytest.approx(100 * achieved / 989.4e12, rel=5e-3)
    assert float(row["TFLOP/s"]) == pytest.approx(achieved / 1e12, rel=2e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_commands_parse_with_the_entry_points_parsers(family):
    """The GPU path cannot run here; its command lines (flag file, extras, driver's flags) parse."""
    import importlib

    gc = _module()
    flag_file, extra = gc.GPU_JOBS[family]
    check = gc.Check.__new__(gc.Check)
    check.jobs, check.args = gc.GPU_JOBS, gc.build_parser().parse_args([])
    check.args.steps, check.args.log_interval = 200, 40
    argv = check.train_argv(family, "bf16", "/data", "/run")
    assert argv[:2] == [flag_file, gc.MODULE[family]]
    module = importlib.import_module(gc.MODULE[family])
    parser = module.create_parser() if hasattr(module, "create_parser") else module.create_argparser()
    args = vars(parser.parse_args(gc.flag_file_argv(flag_file) + [str(a) for a in argv[2:]]))
    assert (args["precision"], args["max_steps"], args["log_interval"], args["data_dir"]) == ("bf16", 200, 40, "/data")
    assert args["image_size"] in (32, 64)


def test_without_a_gpu_the_gpu_mode_says_so(tmp_path):
    out = tmp_path / "x.md"
    proc = subprocess.run(["bash", str(helpers.ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(out),
                           "--workdir", str(tmp_path / "work")],
                          env=helpers.test_env(), capture_output=True, text=True, timeout=helpers.MAX_TIMEOUT)
    assert proc.returncode == 1, helpers.describe(proc)
    (row,) = parse_table(out.read_text())
    assert (row["section"], row["status"]) == ("env", "failed") and "--dry_run" in row["note"]


def test_a_job_past_its_timeout_is_stopped_and_fails(tmp_path):
    """A silent hang (no output after the first line) ends at the deadline, children included."""
    gc = _module()
    log = tmp_path / "job.log"
    with pytest.raises(gc.JobFailed, match="timed out after 1 s"):
        gc.run_job(["bash", "-c", "echo started; sleep 300; echo never"], str(log), 1, dict(os.environ))
    assert log.read_text() == "started\n"


# --- issue 39 item 5: what the check measures is what the trainers run ------------------------

def _digits(tmp_path, size=16):
    out = tmp_path / f"digits{size}"
    if not out.exists():
        proc = helpers.script("datasets/digits.py", "--out", out, "--size", size)
        assert proc.returncode == 0, helpers.describe(proc)
    return str(out / "train")


def test_flops_task_is_the_trainers_own(tmp_path):
    """gpu_check builds each Task through the family's build_task: improved_diffusion's schedule
    sampler, weight decay and anneal, gans' real number of classes, reach the measured Task."""
    from improved_diffusion.resample import LossSecondMomentResampler

    gc = _module()
    flag_file, extra = gc.DRY_JOBS["improved_diffusion"]
    argv = gc.flag_file_argv(flag_file) + extra + ["--schedule_sampler", "loss-second-moment",
                                                   "--weight_decay", "0.05", "--lr_anneal_steps", "77"]
    task, _, _ = gc._build_task("improved_diffusion", argv, None)
    assert isinstance(task.schedule_sampler, LossSecondMomentResampler)
    assert task.opt.param_groups[0]["weight_decay"] == 0.05 and task.lr_anneal_steps == 77
    digits = _digits(tmp_path)
    flag_file, extra = gc.DRY_JOBS["dcgan"]
    argv = gc.flag_file_argv(flag_file) + extra + ["--model", "cdcgan", "--data_dir", digits, "--ema_rate", "0.9"]
    task, _, _ = gc._build_task("dcgan", argv, None)
    assert task.G.num_classes == 10 and task.ema_rates == [0.9]


def test_ddgan_gpu_job_checkpoints_at_no_epoch_past_the_first(tmp_path):
    """The GPU job's flags (the flag file's --save_content included) write no checkpoint at the
    end of any epoch after the first: none inside the timed log rows."""
    from ddgan import train

    gc = _module()
    flag_file, extra = gc.GPU_JOBS["ddgan"]
    o = vars(train.create_parser().parse_args(gc.flag_file_argv(flag_file) + extra))
    assert o["save_content"]  # the flag file asks for content.pth
    assert [e for e in range(1, 5000) if train.epoch_save_due(o, e)] == []


def test_jobs_get_the_drivers_python(tmp_path, monkeypatch):
    gc = _module()
    monkeypatch.delenv("PYTHON", raising=False)
    check = gc.Check(gc.build_parser().parse_args(["--dry_run", "--workdir", str(tmp_path)]))
    assert check.env["PYTHON"] == gc.python() == __import__("sys").executable


def test_peak_table_tells_h100_variants_apart():
    gc = _module()
    assert gc.peak_tflops("NVIDIA H100 NVL", "bf16") == 835.5
    assert gc.peak_tflops("NVIDIA H100 NVL", "fp32") == 417.5
    assert gc.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert gc.peak_tflops("NVIDIA H200 NVL", "fp16") == 835.5
    assert gc.peak_tflops("NVIDIA H200", "fp32") == 494.7
    assert "allow_tf32" in gc.FP32_CONVENTION


def _cuda_info(gc, monkeypatch, gpus):
    """child_env_info with torch.cuda patched in-process: `gpus` H100s."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    return gc.child_env_info()


def test_one_gpu_says_distributed_path_not_tested(tmp_path, monkeypatch):
    gc = _module()
    check = _check(gc, tmp_path)
    check.args.dry_run = False
    check.info = _cuda_info(gc, monkeypatch, 1)
    ran = []
    monkeypatch.setattr(check, "train", lambda *a, **k: ran.append((a, k)))
    check.distributed({f: "/data" for f in FAMILIES})
    assert ran == []
    text = check.markdown(1.0)
    assert "distributed path not tested" in text
    (row,) = parse_table(text)
    assert (row["section"], row["status"]) == ("dist", "not tested")


def test_two_gpus_run_a_2_rank_nccl_row_per_family_and_sync_bn(tmp_path, monkeypatch):
    gc = _module()
    check = _check(gc, tmp_path)
    check.args.dry_run = False
    check.info = _cuda_info(gc, monkeypatch, 2)
    ran = []
    monkeypatch.setattr(check, "train", lambda family, precision, data_dir, launcher, n, tag="", compile_=False,
                        extra=(): ran.append((family, launcher, n, tag, tuple(extra))))
    check.distributed({f: "/data" for f in FAMILIES})
    assert ran == [(f, "torchrun", 2, "-nccl2", ()) for f in FAMILIES] + [
        ("dcgan", "torchrun", 2, "-nccl2-syncbn", ("--sync_bn", "True"))]
    assert check.backend(2, check.info["cuda"]) == "nccl"
