// The floor of bench/sched_overhead: programs on the same six tracepoints as
// probes/sched.bpf.c that do nothing, so what is left is the cost of being attached.
TRACEPOINT_PROBE(sched, sched_switch) { return 0; }
TRACEPOINT_PROBE(sched, sched_wakeup) { return 0; }
TRACEPOINT_PROBE(sched, sched_wakeup_new) { return 0; }
TRACEPOINT_PROBE(sched, sched_migrate_task) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
