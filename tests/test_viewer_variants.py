"""Designers in the browser: ``twin serve --variants RESULTS`` offers the sweep's Pareto-front
variants; a designer compares two side by side and runs one (the served line restarts with its
parameters); other roles see no variant controls and the server refuses them."""

from __future__ import annotations

from pathlib import Path

from conftest import Twin, launch_chromium, require_chromium

from twin import cli

LINE = """
line: variants
stations:
  - {id: a, process_time: {dist: exponential, mean: 10}}
  - {id: b, process_time: 11}
buffers:
  - {id: b1, from: a, to: b, capacity: 2}
"""
SPACE = """
design: buffer-and-speed
parameters:
  - {target: buffers.b1.capacity, values: [1, 6]}
  - {target: stations.b.process_time, range: [9, 12], levels: 2}
objectives: [throughput, cost]
simulation: {hours: 1, replications: 2, seed: 3, batch: 8}
"""
TOKENS = {"designer": "designer-token-0123456789", "viewer": "viewer-token-0123456789"}


def test_a_designer_compares_and_runs_variants(tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    line = tmp_path / "line.yaml"
    line.write_text(LINE)
    (tmp_path / "space.yaml").write_text(SPACE)
    results = tmp_path / "res.parquet"
    assert (
        cli.main(
            [
                "sweep",
                str(line),
                "--space",
                str(tmp_path / "space.yaml"),
                "--generator",
                "grid",
                "--out",
                str(results),
            ]
        )
        == 0
    )
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "".join(f"- {{name: {r}-1, role: {r}, token: {t}}}\n" for r, t in TOKENS.items())
    )
    serve = Twin(
        "serve",
        str(line),
        "--port",
        "0",
        "--tokens",
        str(tokens),
        "--variants",
        str(results),
        "--audit",
        str(tmp_path / "a.jsonl"),
        "--assets",
        str(tmp_path / "assets"),
    )
    try:
        viewer = serve.wait_for(r"viewer: (\S+)").group(1)
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{viewer}#token={TOKENS['designer']}")
            page.wait_for_selector("#variants:not([hidden])", timeout=30_000)
            options = page.eval_on_selector_all("#variant-a option", "os => os.map(o => o.value)")
            assert options[0] == "-1" and len(options) >= 2  # the base line and the front
            a, b = page.input_value("#variant-a"), page.input_value("#variant-b")
            rows = page.eval_on_selector_all(
                "#variant-compare tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))"
            )
            assert rows[0] == ["", "A", "B"] and {r[0] for r in rows[1:]} == {"throughput", "cost"}
            page.click("#run-a")
            page.wait_for_function(
                f"document.getElementById('variant-running').textContent.includes('#{a}')",
                timeout=10_000,
            )
            page.screenshot(path=str(tmp_path / "variants.png"))
            assert errors == [], errors
            del b
            # a viewer sees no variant controls, and the server refuses the command anyway
            page2 = browser.new_page()
            page2.goto(f"{viewer}#token={TOKENS['viewer']}")
            page2.wait_for_function(
                "window.twinViewer && twinViewer.status === 'connected'", timeout=30_000
            )
            assert page2.evaluate("document.getElementById('variants').hidden") is True
            res = page2.evaluate("twinViewer.command('variants', 'variant.select', {variant: -1})")
            assert res["ok"] is False and res["code"] == "forbidden"
            browser.close()
    finally:
        serve.stop()
