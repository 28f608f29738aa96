"""The report's HTML template (Jinja2, autoescaped: every value is escaped unless marked ``|safe``, and only
plotly's own output and plotly.js are). Kept as a Python string so the package needs no data files."""

REPORT_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="MapSage Workbench report {{ generator_commit }}">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'">
<title>{{ title }}</title>
<style>
:root { --fg:#1d232a; --muted:#5b6570; --line:#d8dde3; --bg:#ffffff; --soft:#f4f6f8; --keep:#1e7b34; --drop:#b3261e;
        --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); font-size:14px; line-height:1.45; }
header { padding:24px 32px 12px; border-bottom:1px solid var(--line); background:var(--soft); }
header h1 { margin:0 0 6px; font-size:24px; }
header .meta { color:var(--muted); }
nav { padding:8px 32px; border-bottom:1px solid var(--line); position:sticky; top:0; background:#fff; z-index:10; }
nav a { margin-right:14px; color:var(--accent); text-decoration:none; white-space:nowrap; }
main { padding:8px 32px 48px; max-width:1500px; }
section { margin-top:28px; }
h2 { font-size:19px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { font-size:16px; margin:18px 0 6px; }
p.note, .note { color:var(--muted); }
.tablewrap { overflow-x:auto; margin:6px 0 10px; }
table.data { border-collapse:collapse; font-size:12.5px; }
table.data th, table.data td { border:1px solid var(--line); padding:3px 7px; vertical-align:top; }
table.data th { background:var(--soft); text-align:left; position:sticky; top:0; }
table.data td.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
table.data td.keep { color:var(--keep); font-weight:600; }
table.data td.drop { color:var(--drop); font-weight:600; }
table.data td.baseline { color:var(--muted); }
table.data td.pos { color:var(--keep); }
table.data td.neg { color:var(--drop); }
table.data td.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px; }
table.data td.wrap { max-width:420px; white-space:pre-wrap; word-break:break-word; }
.banner { padding:8px 12px; border-radius:6px; margin:6px 0; }
.banner.keep { background:#e6f4ea; color:var(--keep); }
.banner.none { background:var(--soft); color:var(--muted); }
.banner.warn { background:#fff4e5; color:#8a4b00; }
.grid2 { display:grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 12px; margin:10px 0; }
.thumbrow { display:flex; gap:8px; flex-wrap:wrap; margin:6px 0 14px; }
.thumbrow figure { margin:0; }
.thumbrow img { display:block; border:1px solid var(--line); image-rendering:auto; }
.thumbrow img.mask { image-rendering: pixelated; }
.thumbrow figcaption { font-size:12px; color:var(--muted); max-width:260px; }
.missing { width:180px; height:120px; display:flex; align-items:center; justify-content:center; text-align:center;
           background:var(--soft); color:var(--muted); font-size:12px; border:1px dashed var(--line); padding:6px; }
.legend span.sw { display:inline-block; width:12px; height:12px; border:1px solid #888; vertical-align:-2px;
                  margin:0 4px 0 10px; }
details { margin:6px 0; }
details pre { background:var(--soft); padding:10px; overflow-x:auto; font-size:12px; max-height:480px; }
ul.problems li { color:var(--muted); }
footer { padding:18px 32px; color:var(--muted); border-top:1px solid var(--line); }
@media print { nav { position:static; } .card { break-inside:avoid; } }
</style>
<script type="text/javascript">{{ plotlyjs|safe }}</script>
</head>
<body>
{% macro table(t) -%}
{% if t.rows %}<div class="tablewrap"><table class="data"{% if t.id %} id="{{ t.id }}"{% endif %}>
<thead><tr>{% for c in t.columns %}<th{% if c.tip %} title="{{ c.tip }}"{% endif %}>{{ c.label }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in t.rows %}<tr>{% for cell in row %}<td{% if cell.cls %} class="{{ cell.cls }}"{% endif %}>{{ cell.text }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>{% else %}<p class="note">{{ t.empty }}</p>{% endif %}
{%- endmacro %}
<header>
  <h1 id="report-title">{{ title }}</h1>
  <div class="meta">Generated {{ generated_at }} · MapSage code {{ generator_commit }} · {{ runs|length }} run(s) ·
    dataset(s): {{ datasets }} · evaluated split(s): {{ splits }}</div>
  <p class="note">Figures are percentages (points) of the split named beside each one; differences are
    points. mIoU is dataset-level (intersections and unions summed over the split's tiles, ignore index dropped,
    classes absent from both label and prediction excluded from the mean); Boundary IoU is measured on a
    {{ boundary_px }} band along class boundaries. Confidence intervals: paired bootstrap over tiles
    ({{ n_boot }} resamples, seed {{ seed }}, {{ ci_level }} % percentile intervals).</p>
</header>
<nav>{% for s in sections %}<a href="#{{ s.id }}">{{ s.title }}</a>{% endfor %}</nav>
<main>

<section id="runs">
<h2>Runs</h2>
<p class="note">The first run is the reference of the run-to-run comparisons.</p>
{{ table(runs_table) }}
</section>

<section id="experiments">
<h2>Experiment table</h2>
<p class="note">One row per run, split and weights/variant: its latest evaluation on all domains pooled (the one
whose per-tile areas the bootstrap uses). Epoch is 1-based; “final” is an evaluation after training.
FPS = images per second of inference measured by that evaluation (its device in Provenance).</p>
{{ table(experiments) }}
</section>

{% if classification %}
<section id="classification">
<h2>Image classification</h2>
<p class="note">One row per classification run, split and weights/variant: its latest evaluation (“final” scores
the kept checkpoint after training). Figures are percentages of the split's images; ECE (15 fixed confidence
bins) before → after temperature scaling, with the temperature T fitted by NLL on the same split.</p>
{{ table(classification.experiments) }}
{% if classification.groups %}<h3>Fold / seed groups</h3>
<p class="note">Mean ± sd (n − 1) over each run's final evaluation (the kept checkpoint).</p>
{{ table(classification.groups) }}{% endif %}
{% for r in classification.runs %}
<div class="card">
<h3>{{ r.heading }}</h3>
{% for pc in r.per_class %}<h4>Per class — {{ pc.heading }}</h4>
{{ table(pc.table) }}{% endfor %}
<div class="grid2">{% for f in r.figures %}<div>{{ f|safe }}</div>{% endfor %}</div>
{% for n in r.notes %}<p class="note">{{ n }}</p>{% endfor %}
</div>
{% endfor %}
</section>
{% endif %}

<section id="differences">
<h2>Differences and their confidence intervals</h2>
<p class="note">Each difference is B − A on the same tiles of the named split. A difference is
<em>real</em> only when its interval excludes 0; otherwise it is inside the tile-sampling noise.</p>
{% if forest %}{{ forest|safe }}{% endif %}
{{ table(differences) }}
{% if bootstrap_problems %}<h3>Comparisons that could not be made</h3>
<ul class="problems">{% for p in bootstrap_problems %}<li>{{ p }}</li>{% endfor %}</ul>{% endif %}
</section>

<section id="ab">
<h2>A/B decisions (TTA, post-processing, refinement, ensembles)</h2>
{% if not ab_groups %}<p class="note">None of these runs wrote A/B rows (only TTA A/B, evaluation with
post-processing, refinement and ensemble stages do).</p>{% endif %}
{% for g in ab_groups %}
<div class="card">
<h3>{{ g.heading }}</h3>
{% if g.kept %}<div class="banner keep">Keep: {{ g.kept }}</div>{% else %}<div class="banner none">No variant
reached the threshold: keep the baseline ({{ g.baseline }}).</div>{% endif %}
{% for w in g.warnings %}<div class="banner warn">{{ w }}</div>{% endfor %}
{{ table(g.table) }}
{% if g.figure %}{{ g.figure|safe }}{% endif %}
</div>
{% endfor %}
</section>

<section id="tiles">
<h2>Tiles that changed most</h2>
<p class="note">Per A/B variant, the tiles whose own score (mean over the classes present in the tile) of the
decision's criterion changed most against the baseline, from the stored per-tile areas.
Change map: <span style="color:#28c83c">■</span> fixed (now agrees with the label),
<span style="color:#e61e1e">■</span> broken (the baseline agreed), <span style="color:#ffa000">■</span> changed but
still wrong, <span style="color:#00beff">■</span> changed on ignored pixels (not scored); label black = ignored.</p>
{% if not thumb_groups %}<p class="note">{{ thumbs_empty }}</p>{% endif %}
{% for g in thumb_groups %}
<div class="card">
<h3>{{ g.heading }}</h3>
<div class="legend note">{% for c in g.legend %}<span class="sw" style="background:{{ c.colour }}"></span>{{ c.name }}{% endfor %}</div>
{% for t in g.tiles %}
<div><strong>#{{ t.rank }} {{ t.tile }}</strong> <span class="note">(split {{ t.split }}) · {{ t.criterion }}
  {{ t.baseline }} {{ t.baseline_score }} → {{ t.variant }} {{ t.variant_score }} ({{ t.delta }} points)</span></div>
<div class="thumbrow">
{% for p in t.panels %}<figure>{% if p.uri %}<img src="{{ p.uri }}" alt="{{ p.caption }} of {{ t.tile }}"{% if p.caption != 'image' %} class="mask"{% endif %}>{% else %}<div class="missing">{{ p.note }}</div>{% endif %}<figcaption>{{ p.caption }}{% if p.uri and p.note %}<br>{{ p.note }}{% endif %}</figcaption></figure>
{% endfor %}</div>
{% endfor %}
</div>
{% endfor %}
</section>

<section id="classes">
<h2>Per-class IoU and Boundary IoU</h2>
<div class="grid2">{% for f in class_figures %}<div>{{ f|safe }}</div>{% endfor %}</div>
<h3>IoU per class (%)</h3>
{{ table(class_iou) }}
<h3>Boundary IoU per class (%)</h3>
{{ table(class_biou) }}
{% if weakest %}<p class="note">Weakest classes (IoU, lowest first): {{ weakest }}</p>{% endif %}
</section>

<section id="confusion">
<h2>Confusion matrices</h2>
<p class="note">Rows are label classes, columns predictions; each cell is the share of the label's pixels
(rows sum to 100 %); hover for pixel counts. All domains pooled.</p>
{% if not confusion_figures %}<p class="note">No confusion matrix stored for these runs.</p>{% endif %}
<div class="grid2">{% for f in confusion_figures %}<div>{{ f|safe }}</div>{% endfor %}</div>
</section>

<section id="curves">
<h2>Curves</h2>
{% if not curve_figures %}<p class="note">No per-epoch figures stored for these runs (evaluation and A/B stages
score once).</p>{% endif %}
<div class="grid2">{% for f in curve_figures %}<div>{{ f|safe }}</div>{% endfor %}</div>
</section>

{{ reliability_section|safe }}

<section id="review">
<h2>Review verdicts and health checks</h2>
<h3>Review verdicts</h3>
{{ table(verdicts) }}
<h3>Health checks</h3>
{{ table(health) }}
</section>

<section id="config">
<h2>Config differences</h2>
{{ table(config_diff) }}
{% for c in configs %}<details><summary>Resolved config of {{ c.label }} (<code>{{ c.run_id }}</code>, hash
{{ c.hash }})</summary><pre>{{ c.text }}</pre></details>{% endfor %}
</section>

<section id="provenance">
<h2>Provenance</h2>
{{ table(provenance) }}
</section>
</main>
<footer>MapSage Workbench comparison report · generated {{ generated_at }} from the workbench store ·
code {{ generator_commit }}. This file is self-contained: no network access is needed or made.</footer>
</body>
</html>
"""
