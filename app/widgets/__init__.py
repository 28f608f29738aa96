"""Shared widgets and helpers of the Streamlit workbench. Pages in ``app/views/`` stay thin and call these.

``nav`` (the page registry, the entry routine and the routing guard), ``common`` (store refresh, navigation links,
error display, number and status formatting), ``data`` (cached reads of the store's public query functions),
``templates`` (the plan's stage templates, via ``runners.api.list_templates``), ``knobs`` / ``knob_form`` (the key
knobs of a template turned into ``--set`` overrides, and their form), ``launch`` (launch / cancel / resume through
``runners.api``), ``live`` (the running-jobs fragment), ``tables`` (the experiment table), ``evals`` (choosing one
evaluation of a run), ``compare`` (config diff, deltas, paired bootstrap), ``palette`` (class colours from a config),
``dataset_card`` (what Home says about a dataset). Figures come from :mod:`mapsage.figures`, one library
for the app and the reports.

Other engineers' widgets live here too: ``review_map`` / ``review_tiles`` (the map review) and ``report_button``
(report export)."""
