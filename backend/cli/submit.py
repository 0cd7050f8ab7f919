"""``brainmia submit``: an assessment through a running server's REST API (for MLOps pipelines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..progress import progress_bar, stderr
from .common import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, QuietOpt, errors_exit_2, fail, requested_options
from .summary import print_summary

if TYPE_CHECKING:
    from ..client import ApiError


def submit(
    model: Annotated[Path, typer.Option("--model", help="Model file to upload (TorchScript, .pt2, safetensors, state dict).")],
    server: Annotated[str, typer.Option("--server", envvar="BRAINMIA_SERVER", help="Base URL of the BrainMIA server, e.g. http://brainmia:8000 (or $BRAINMIA_SERVER).")],
    token: Annotated[Optional[str], typer.Option("--token", envvar="BRAINMIA_TOKEN", show_default=False, help="API token (or $BRAINMIA_TOKEN).")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="Manifest CSV: it and the scans it lists are packed into a .tar.gz and uploaded.")] = None,
    archive: Annotated[Optional[Path], typer.Option("--archive", help="A .zip / .tar.gz holding manifest.csv and the scans, uploaded as it is.")] = None,
    metadata: Annotated[Optional[str], typer.Option("--metadata", help="Model metadata: a JSON file or JSON text (default: the model's sidecar <model>.json).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the verdict (default), or print the assessment id and exit 0.")] = True,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.html and features.csv.")] = Path("brainmia-report"),
    repeats: Annotated[Optional[int], typer.Option("--repeats", min=1, help="Repeated attack splits (server default: 5).")] = None,
    classifier: Annotated[Optional[list[str]], typer.Option("--classifier", help="Attack classifier (repeatable): threshold, logistic, mlp, gbt.")] = None,
    feature_set: Annotated[Optional[list[str]], typer.Option("--feature-set", help="Feature set to attack with (repeatable; default: all of the paper's).")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="Policy file (JSON or TOML) overriding the server's default thresholds.")] = None,
    scan_qa: Annotated[Optional[str], typer.Option("--scan-qa", help="Scan QA against the MNI152 template: fail (default), warn or off, as for brainmia assess.")] = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.05, help="Seconds between progress polls.")] = 2.0,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0.0, help="Give up waiting after this many seconds (exit 2; the job goes on).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run an assessment on a BrainMIA server: exit 0 when the verdict passes the policy, 1 when it fails, 2 on bad input or error."""
    import tempfile

    from ..client import ApiError, BrainMIAClient, JobFailed, load_metadata, pack_manifest, sidecar_metadata

    if not token:
        raise fail("an API token is required: --token or $BRAINMIA_TOKEN")
    if (manifest is None) == (archive is None):
        raise fail("give exactly one of --manifest or --archive")
    scans = manifest if manifest is not None else archive
    assert scans is not None
    for label, path in (("--model", model), ("--manifest" if manifest else "--archive", scans)):
        if not path.is_file():
            raise fail(f"{label}: {path} is not a file")
    try:
        meta = load_metadata(metadata) if metadata is not None else sidecar_metadata(model)
    except (OSError, ValueError) as exc:
        raise fail(exc) from None
    with errors_exit_2():
        # only the fields given: the server's defaults apply to the rest
        options = requested_options(repeats=repeats, classifiers=classifier, feature_sets=feature_set,
                                    policy=policy, scan_qa=scan_qa).model_dump(exclude_unset=True, exclude_none=True)

    doing = "checking the token"
    with BrainMIAClient(server, token) as client, tempfile.TemporaryDirectory(prefix="brainmia-submit-") as tmp:
        try:
            client.me()
            with progress_bar(not quiet) as bar:

                def sent(label: str) -> Any:
                    return lambda done, total: bar("upload", done / total if total else 1.0, f"{label} {done / 1e6:.1f}/{total / 1e6:.1f} MB")

                doing = f"uploading the model {model}"
                model_row = client.upload_model(model, meta, progress=sent("model"))
                if manifest is not None:
                    doing = f"packing {manifest}"
                    bar("pack", 0.0, f"{manifest} and its scans")
                    archive = pack_manifest(manifest, Path(tmp) / "scans.tar.gz")
                assert archive is not None
                doing = f"uploading the scans {scans}"
                scan_set = client.upload_scan_set(archive, name=scans.name, progress=sent("scans"))
            stderr.print(
                f"scan set {scan_set['id']}: {scan_set.get('n_scans')} scans ({scan_set.get('n_members')} members, "
                f"{scan_set.get('n_nonmembers')} non-members); model {model_row['id']} ({model_row.get('format')})",
                highlight=False,
            )
            doing = "starting the assessment"
            job = client.start_assessment(model_row["id"], scan_set["id"], options)
            stderr.print(f"assessment {job['id']} {job.get('state', 'queued')} on {server}", highlight=False)
            if not wait:
                typer.echo(f"assessment: {job['id']}")
                raise typer.Exit(EXIT_PASS)
            doing = f"waiting for assessment {job['id']}"
            with progress_bar(not quiet) as bar:
                client.wait(
                    job["id"],
                    poll_interval=poll_interval,
                    timeout=timeout,
                    on_update=lambda j: bar(str(j.get("stage") or j.get("state")), float(j.get("progress") or 0.0), str(j.get("message") or "")),
                )
            doing = f"downloading the results of assessment {job['id']}"
            paths = {key: client.download(job["id"], name, out / name)
                     for key, name in (("report_json", "report.json"), ("report_html", "report.html"), ("features", "features.csv"))}
        except ApiError as exc:
            raise _api_failure(exc, doing) from None
        except JobFailed as exc:
            stderr.print(f"[bold red]error:[/] assessment {exc.job.get('id')} {exc.job.get('state')}: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except (TimeoutError, OSError, ValueError) as exc:
            raise fail(f"{doing}: {exc}") from None
    try:
        report = json.loads(paths["report_json"].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"the downloaded report.json is unreadable: {exc}") from None
    print_summary(report, paths)
    raise typer.Exit(EXIT_PASS if report["verdict"]["passed"] else EXIT_FAIL)


def _api_failure(exc: ApiError, doing: str) -> typer.Exit:
    """Print the server's error (message, then its row/field details); returns the exit (code 2)."""
    stderr.print(f"[bold red]error:[/] {doing}: {exc.lines()[0]}", highlight=False, soft_wrap=True)
    for line in exc.lines()[1:]:
        stderr.print(line, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)
