// CPU scheduling of watched processes, aggregated in the kernel.
//
// What is measured, per group (a watched process in the default mode, a cgroup with
// -DCGROUP_MODE):
//   - run-queue latency: from wakeup, or from being preempted while still runnable, until
//     the task runs again (log2 histogram of microseconds + exact total in ns);
//   - off-CPU time: from switching out while blocked until the task runs again (same);
//   - context switches, voluntary (blocked) and involuntary (preempted), and CPU
//     migrations (counters).
// Latencies are attributed to the task being switched in (args->next_pid), never to
// `current`.
//
// Hooks: the scheduler tracepoints sched:sched_switch, sched_wakeup, sched_wakeup_new,
// sched_migrate_task, sched_process_fork and sched_process_exit, read only through their
// format fields (bcc builds `args` from the running kernel's tracefs format files). No
// task_struct field is ever read: bcc would take its offsets from the installed headers,
// which need not be the running kernel's, and the numbers would be silently wrong. The
// thread -> group mapping therefore lives in a map, seeded from /proc/<pid>/task by user
// space, extended here on fork and pruned on exit.
//
// Cost: an unwatched task costs one array lookup per event (a flag indexed by its thread
// id, which the verifier inlines); a watched one adds a hash lookup, a clock read and a few
// atomic adds in place (no per-event map updates, no per-event output).
// Measured with bench/sched_overhead on a pinned `perf bench sched pipe` storm (2 vCPU VM,
// 2026-11-23, medians; see bench/RESULTS.md): empty programs on these tracepoints 11-16 %
// slower, this probe watching another process 8-10 %, watching the storm 12-20 %, bcc's
// runqlat 28-31 %.
//
// Privilege: CAP_BPF + CAP_PERFMON (or root) to load and attach; CAP_SYS_ADMIN before 5.8
// and on Debian/Ubuntu kernels with perf_event_paranoid > 2; CAP_SYS_RESOURCE before 5.11
// (maps charged to RLIMIT_MEMLOCK). agent/collectors/sched/preflight.py says which.

#include <uapi/linux/ptrace.h>

// The map sizes come from agent/collectors/sched/probe.py (SLOTS, FILTER_SLOTS, MAX_GROUPS,
// max_threads; passed by probe_cflags) as -D flags, so that the kernel and user space
// cannot disagree; the reasons for each are there.
#if !defined(MAX_THREADS) || !defined(FILTER_SLOTS) || !defined(MAX_GROUPS) || !defined(SLOTS)
#error "MAX_THREADS, FILTER_SLOTS, MAX_GROUPS and SLOTS come from sched/probe.py as -D flags"
#endif
#if (FILTER_SLOTS & (FILTER_SLOTS - 1)) || (SLOTS & (SLOTS - 1))
// Indexes are masked, which the verifier accepts as a bounded access.
#error "FILTER_SLOTS and SLOTS must be powers of two"
#endif

// prev_state bits that mean "blocked" (S D T t X Z P I). A preempted task is reported as
// R (0) or with a bit above these (TASK_REPORT_MAX, 0x100 since 4.14), so masking tells
// voluntary switches from involuntary ones on every kernel the tracepoint exists on.
#define BLOCKED_MASK 0xff
// prev_state bits of a task's last switch: X (EXIT_DEAD, 0x10) or Z (EXIT_ZOMBIE, 0x20), as
// the tracepoint's own print format decodes them. sched_process_exit fires before that
// switch, so the switch is where a dead thread's entry goes away for good.
#define DEAD_MASK 0x30

enum drop_reason { DROP_THREADS_FULL = 0, DROP_GROUPS_FULL = 1, DROP_REASONS = 2 };

struct thread_t {
    u64 group;      // watched tgid, or cgroup id; 0 = not known yet
    u64 offcpu_ts;  // when it switched out blocked; 0 when on a CPU or runnable
    u64 runq_ts;    // when it became runnable without a CPU; 0 otherwise
};

struct group_t {
    u64 runq_slots[SLOTS];
    u64 offcpu_slots[SLOTS];
    u64 runq_ns;
    u64 offcpu_ns;
    u64 voluntary;
    u64 involuntary;
    u64 migrations;
};

#ifdef CGROUP_MODE
// Every live thread on the host (not every thread id: entries go on a thread's last
// switch, so pid_max does not size it). LRU: should live threads outnumber MAX_THREADS, the
// least recently switched one loses its timestamps instead of a new thread being refused.
BPF_TABLE("lru_hash", u32, struct thread_t, threads, MAX_THREADS);
#else
// Threads of watched processes, seeded by user space; an exact set (a watched thread is
// never evicted), so a full map refuses and counts the drop.
BPF_HASH(threads, u32, struct thread_t, MAX_THREADS);
#endif
// Set before a thread enters `threads` (by user space or on fork), cleared only by user
// space when it rebuilds the flags from `threads`: a flag may be stale (then the hash
// lookup misses), never missing for a watched thread. Unused in cgroup mode.
BPF_ARRAY(maybe, u32, FILTER_SLOTS);
BPF_HASH(groups, u64, struct group_t, MAX_GROUPS);
// A zeroed group_t to insert from: the struct is too large for the 512-byte BPF stack.
BPF_ARRAY(zero_group, struct group_t, 1);
BPF_PERCPU_ARRAY(dropped, u64, DROP_REASONS);

static __always_inline void count_drop(int reason) {
    u64 *n = dropped.lookup(&reason);
    if (n)
        (*n)++;
}

static __always_inline struct group_t *group_of(u64 id) {
    if (id == 0)
        return 0;
    struct group_t *g = groups.lookup(&id);
    if (g)
        return g;
    int z = 0;
    struct group_t *zero = zero_group.lookup(&z);
    if (!zero)
        return 0;
    groups.insert(&id, zero);
    g = groups.lookup(&id);
    if (!g)
        count_drop(DROP_GROUPS_FULL);
    return g;
}

static __always_inline u32 slot_of(u64 delta_ns) {
    u32 slot = bpf_log2l(delta_ns / 1000);
    if (slot > SLOTS - 1)
        slot = SLOTS - 1;
    return slot & (SLOTS - 1);
}

// The filter every event goes through: the thread's entry, or 0 when it is not watched.
static __always_inline struct thread_t *watched(u32 tid) {
#ifndef CGROUP_MODE
    u32 slot = tid & (FILTER_SLOTS - 1);
    u32 *flag = maybe.lookup(&slot);
    if (!flag || !*flag)
        return 0;
#endif
    return threads.lookup(&tid);
}

#ifdef CGROUP_MODE
// Every task is tracked; its group is the cgroup it was in when it last left a CPU (the
// only moment it is `current` here). A new thread starts in its parent's cgroup.
static __always_inline struct thread_t *track(u32 tid, u64 group) {
    struct thread_t fresh = {.group = group};
    if (threads.insert(&tid, &fresh) != 0) {
        struct thread_t *t = threads.lookup(&tid);
        if (!t)
            count_drop(DROP_THREADS_FULL);
        return t;
    }
    return threads.lookup(&tid);
}
#endif

TRACEPOINT_PROBE(sched, sched_switch) {
    u32 prev = args->prev_pid;
    u32 next = args->next_pid;
    u64 now = 0;
    // pid 0 is each CPU's idle task: never watched, and the most frequent of all.
    if (prev != 0) {
        struct thread_t *t = watched(prev);
#ifdef CGROUP_MODE
        u64 cgroup = bpf_get_current_cgroup_id();  // current is still prev here
        if (!t)
            t = track(prev, cgroup);
        if (t)
            t->group = cgroup;
#endif
        if (t) {
            now = bpf_ktime_get_ns();
            struct group_t *g = group_of(t->group);
            if (args->prev_state & BLOCKED_MASK) {
                t->offcpu_ts = now;
                t->runq_ts = 0;
                if (g)
                    __sync_fetch_and_add(&g->voluntary, 1);
            } else {
                t->runq_ts = now;
                t->offcpu_ts = 0;
                if (g)
                    __sync_fetch_and_add(&g->involuntary, 1);
            }
        }
        // Its last switch: nothing will switch it in again.
        if (args->prev_state & DEAD_MASK)
            threads.delete(&prev);
    }
    if (next != 0) {
        struct thread_t *t = watched(next);
        if (t && (t->runq_ts | t->offcpu_ts)) {
            if (now == 0)
                now = bpf_ktime_get_ns();
            struct group_t *g = group_of(t->group);
            if (g) {
                if (t->runq_ts && now > t->runq_ts) {
                    u64 d = now - t->runq_ts;
                    __sync_fetch_and_add(&g->runq_slots[slot_of(d)], 1);
                    __sync_fetch_and_add(&g->runq_ns, d);
                }
                if (t->offcpu_ts && now > t->offcpu_ts) {
                    u64 d = now - t->offcpu_ts;
                    __sync_fetch_and_add(&g->offcpu_slots[slot_of(d)], 1);
                    __sync_fetch_and_add(&g->offcpu_ns, d);
                }
            }
            t->runq_ts = 0;
            t->offcpu_ts = 0;
        }
    }
    return 0;
}

// The run-queue wait of a blocked task starts at its wakeup. A wakeup of a task that never
// left its CPU (woken between setting its state and calling schedule()) starts nothing,
// and an earlier start (preempted, then woken again) is kept.
static __always_inline void on_wakeup(u32 pid, int fresh) {
    struct thread_t *t = watched(pid);
#ifdef CGROUP_MODE
    if (!t && fresh)
        t = track(pid, bpf_get_current_cgroup_id());  // current: the parent
#endif
    if (!t)
        return;
    if ((fresh || t->offcpu_ts) && t->runq_ts == 0)
        t->runq_ts = bpf_ktime_get_ns();
}

TRACEPOINT_PROBE(sched, sched_wakeup) {
    on_wakeup(args->pid, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new) {
    on_wakeup(args->pid, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_migrate_task) {
    // The tracepoint also fires when the CPU does not change; the kernel counts only moves.
    if (args->orig_cpu == args->dest_cpu)
        return 0;
    struct thread_t *t = watched(args->pid);
    if (!t)
        return 0;
    struct group_t *g = group_of(t->group);
    if (g)
        __sync_fetch_and_add(&g->migrations, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    // parent_pid is the forking thread (current), child_pid the new thread or process.
    u32 parent = args->parent_pid;
    u32 child = args->child_pid;
#ifdef CGROUP_MODE
    track(child, bpf_get_current_cgroup_id());
#else
    struct thread_t *p = watched(parent);
    if (!p)
        return 0;
    // A thread or child process of a watched thread joins its group.
    u32 slot = child & (FILTER_SLOTS - 1);
    u32 one = 1;
    maybe.update(&slot, &one);
    struct thread_t c = {.group = p->group};
    if (threads.update(&child, &c) != 0)
        count_drop(DROP_THREADS_FULL);
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 pid = args->pid;
    threads.delete(&pid);
    return 0;
}
