"""The monitor's trace events (monitor/trace-events), with QEMU's names."""

from __future__ import annotations

from util.trace import trace_event

trace_monitor_protocol_event_handler = trace_event(
    "monitor_protocol_event_handler", "event", "qdict"
)
trace_monitor_protocol_event_emit = trace_event("monitor_protocol_event_emit", "event", "data")
trace_monitor_protocol_event_queue = trace_event(
    "monitor_protocol_event_queue", "event", "qdict", "rate"
)
trace_monitor_suspend = trace_event("monitor_suspend", "mon", "cnt")
trace_monitor_qmp_in_band_enqueue = trace_event(
    "monitor_qmp_in_band_enqueue", "req", "mon", "queue_length"
)
trace_monitor_qmp_in_band_dequeue = trace_event(
    "monitor_qmp_in_band_dequeue", "req", "queue_length"
)
trace_monitor_qmp_cmd_in_band = trace_event("monitor_qmp_cmd_in_band", "id")
trace_monitor_qmp_err_in_band = trace_event("monitor_qmp_err_in_band", "desc")
trace_monitor_qmp_cmd_out_of_band = trace_event("monitor_qmp_cmd_out_of_band", "id")
trace_monitor_qmp_respond = trace_event("monitor_qmp_respond", "mon", "json")
trace_handle_qmp_command = trace_event("handle_qmp_command", "mon", "req")
trace_handle_hmp_command = trace_event("handle_hmp_command", "mon", "cmdline")
