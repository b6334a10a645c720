"""Trace tools: export to Perfetto/Chrome JSON, timeline pictures, lock-order graphs,
and the scenario scripts that regenerate docs/images/.

Run each as ``python -m tools.trace.NAME`` from the repository root:

* ``to_chrome``  convert a recorded trace (log lines or a record file) to Chrome JSON;
* ``timeline``   draw a trace as a timeline picture (SVG, PNG; needs matplotlib);
* ``lockgraph``  print the observed lock-order graph (text or Graphviz dot);
* ``scenarios``  run one teaching scenario against ``python -m system`` with tracing on;
* ``make_docs``  run every scenario and regenerate docs/images/.
"""
