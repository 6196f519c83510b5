/*
 * A fake libnvidia-ml.so.1 for testing Vigil's GPU collector without a GPU.
 *
 * It exports the NVML symbols the collector reaches through pynvml, with the exact
 * versioned names pynvml resolves (nvmlInitWithFlags, nvmlDeviceGetCount_v2,
 * nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetPciInfo_v3, nvmlDeviceGetMemoryInfo_v2,
 * nvmlDeviceGetComputeRunningProcesses_v3, nvmlEventSetWait_v2 ...) and the struct
 * layouts of pynvml.py (c_nvmlMemory_v2_t, c_nvmlProcessInfo_v2_t, nvmlPciInfo_t,
 * c_nvmlProcessUtilizationSample_t, c_nvmlEventData_t).
 *
 * Driven by a scenario file (path in FAKE_NVML_SCENARIO; format in scenario.md). The file
 * is re-read when its inode, size or mtime changes, checked at the calls that start a poll
 * (init, device count, handle by index) and in the event wait, so a test can turn a GPU
 * lost or grow a process list while the agent runs. Write it atomically (rename).
 *
 * Every exported call is counted in a shared file (path in FAKE_NVML_CALLS): 64 records of
 * {char name[56]; uint64 count}, record 0 = "total". Tests and the benchmark read it from
 * outside the agent to assert that a scrape makes no NVML call.
 *
 * Awkward on purpose, as real drivers are (each selectable per scenario, see scenario.md):
 * process entries of 32 bytes on the R535 drivers that wrote them, a process-utilization
 * buffer of fixed size padded with pid-0 entries, samples over 100 % or stamped in the
 * future, v1 memory counting the reserved memory as used, MPS clients listed only by the MPS
 * call, an event wait that answers GPU_IS_LOST and stays broken, event data naming the GPU
 * by a handle other than the one nvmlDeviceGetHandleByIndex gave, a GPU answering
 * NVML_ERROR_UNKNOWN, and a GPU whose handle call answers NO_PERMISSION.
 *
 * Build: gcc -shared -fPIC -O2 -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 fake_nvml.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- NVML ABI (values from nvml.h / pynvml.py) --------------------------------------- */
typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NO_PERMISSION = 4, NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7, NVML_ERROR_DRIVER_NOT_LOADED = 9, NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15, NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_UNKNOWN = 999,
};
#define NVML_EVENT_TYPE_XID 0x8ULL
#define NVML_EVENT_TYPE_SBE 0x1ULL
#define NVML_EVENT_TYPE_DBE 0x2ULL
#define NVML_MEMORY_V2_VERSION 0x02000028u /* sizeof(nvmlMemory_v2_t) | 2 << 24 */
#define NVML_VALUE_NOT_AVAILABLE 0xFFFFFFFFFFFFFFFFULL
#define NO_INSTANCE 0xFFFFFFFFu

typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t; /* 24 bytes: nvml.h's v3 before 535.43, and again from the drivers
                        that have nvmlDeviceGetRunningProcessDetailList */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
    unsigned long long usedGpuCcProtectedMemory;
} nvmlProcessInfoCc_t; /* 32 bytes: what R535 drivers 535.43-535.86 and 535.104.05+ write */
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct handle { int kind; int gpu; int mig; } handle_t; /* kind 0 GPU, 1 MIG */
typedef handle_t *nvmlDevice_t;
typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

/* ---- the scenario ------------------------------------------------------------------- */
#define MAXGPU 16
#define MAXMIG 7 /* an A100/H100 splits into at most 7 GPU instances */
#define MAXPROC 4096
#define MAXXID 1024

/* Fields a scenario can declare unsupported for one GPU ("unsupported=power,ecc"). */
enum field {
    F_UTIL, F_MEMORY, F_MEMORY_V2, F_TEMPERATURE, F_POWER, F_ENERGY, F_CLOCKS, F_CLOCK_EVENTS,
    F_ECC, F_PCIE_REPLAY, F_PSTATE, F_PROCESSES, F_PROCESS_UTIL, F_EVENTS, F_PCIE_THROUGHPUT,
    F_MIG, F_COUNT
};
static const char *FIELD_NAMES[F_COUNT] = {
    "utilization", "memory", "memory_v2", "temperature", "power", "energy", "clocks",
    "clock_events", "ecc", "pcie_replay", "pstate", "processes", "process_utilization",
    "events", "pcie_throughput", "mig",
};

struct gpu {
    char uuid[96], name[96], bus[32];
    unsigned util, memutil, temp, power_mw, sm_mhz, mem_mhz, replay, pcie_tx, pcie_rx;
    unsigned long long total, used, free, reserved, energy_mj, reasons, ecc_corr, ecc_uncorr;
    int pstate, lost, mig_mode, pcie_delay_ms, init_lost, no_permission, util_buffer;
    unsigned unsupported, unknown; /* field bits answering NOT_SUPPORTED / UNKNOWN */
    int unknown_all;               /* every call on the GPU answers NVML_ERROR_UNKNOWN */
};
struct mig { int gpu; unsigned gi, ci; char uuid[96]; unsigned long long total, used, free; };
struct proc {
    int gpu, mig, has_mem, has_sm, late, mps, future;
    unsigned pid, sm, memutil;
    unsigned long long mem;
};
struct xid { int gpu; unsigned long long code, seq; };
struct scenario {
    char driver[80];
    int init_error, ngpu, nproc, nxid;
    int nmig[MAXGPU];
    struct gpu gpus[MAXGPU];
    struct mig migs[MAXGPU][MAXMIG];
    struct proc procs[MAXPROC];
    struct xid xids[MAXXID];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct scenario *sc;
static struct stat sc_stat;
static int initialized;
static int revealed[MAXGPU]; /* "late" processes show once a size query has been answered */
static handle_t gpu_handles[MAXGPU];
/* Event data names the GPU by these: same GPU, another address than gpu_handles[]. */
static handle_t event_handles[MAXGPU];
static handle_t mig_handles[MAXGPU][MAXMIG];

/* ---- call counting ------------------------------------------------------------------ */
struct counter { char name[56]; uint64_t count; };
#define MAXCOUNTERS 64
static struct counter *counters;
static char counters_path[4096];

enum fid {
    C_TOTAL, C_nvmlInitWithFlags, C_nvmlInit_v2, C_nvmlShutdown, C_nvmlErrorString,
    C_nvmlSystemGetDriverVersion, C_nvmlDeviceGetCount_v2, C_nvmlDeviceGetHandleByIndex_v2,
    C_nvmlDeviceGetIndex, C_nvmlDeviceGetName, C_nvmlDeviceGetUUID, C_nvmlDeviceGetPciInfo_v3,
    C_nvmlDeviceGetUtilizationRates, C_nvmlDeviceGetMemoryInfo, C_nvmlDeviceGetMemoryInfo_v2,
    C_nvmlDeviceGetTemperature, C_nvmlDeviceGetPowerUsage,
    C_nvmlDeviceGetTotalEnergyConsumption, C_nvmlDeviceGetClockInfo,
    C_nvmlDeviceGetCurrentClocksEventReasons, C_nvmlDeviceGetCurrentClocksThrottleReasons,
    C_nvmlDeviceGetTotalEccErrors, C_nvmlDeviceGetPcieReplayCounter,
    C_nvmlDeviceGetPerformanceState, C_nvmlDeviceGetPcieThroughput,
    C_nvmlDeviceGetComputeRunningProcesses_v3, C_nvmlDeviceGetProcessUtilization,
    C_nvmlDeviceGetMigMode, C_nvmlDeviceGetMaxMigDeviceCount,
    C_nvmlDeviceGetMigDeviceHandleByIndex, C_nvmlDeviceGetGpuInstanceId,
    C_nvmlDeviceGetComputeInstanceId, C_nvmlDeviceGetSupportedEventTypes, C_nvmlEventSetCreate,
    C_nvmlDeviceRegisterEvents, C_nvmlEventSetWait_v2, C_nvmlEventSetFree,
    C_nvmlDeviceGetMPSComputeRunningProcesses_v3, C_COUNT
};
static const char *FID_NAMES[C_COUNT] = {
    "total", "nvmlInitWithFlags", "nvmlInit_v2", "nvmlShutdown", "nvmlErrorString",
    "nvmlSystemGetDriverVersion", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetIndex", "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetTemperature", "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetTotalEccErrors", "nvmlDeviceGetPcieReplayCounter",
    "nvmlDeviceGetPerformanceState", "nvmlDeviceGetPcieThroughput",
    "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex", "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId", "nvmlDeviceGetSupportedEventTypes", "nvmlEventSetCreate",
    "nvmlDeviceRegisterEvents", "nvmlEventSetWait_v2", "nvmlEventSetFree",
    "nvmlDeviceGetMPSComputeRunningProcesses_v3",
};

static void map_counters(void) {
    const char *path = getenv("FAKE_NVML_CALLS");
    if (!path || !*path || (counters && strcmp(path, counters_path) == 0)) return;
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) { fprintf(stderr, "fake-nvml: cannot open %s: %s\n", path, strerror(errno)); return; }
    size_t size = sizeof(struct counter) * MAXCOUNTERS;
    if (ftruncate(fd, (off_t)size) != 0) { close(fd); return; }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return;
    struct counter *c = p;
    for (int i = 0; i < C_COUNT; i++)
        if (c[i].name[0] == 0) snprintf(c[i].name, sizeof c[i].name, "%s", FID_NAMES[i]);
    snprintf(counters_path, sizeof counters_path, "%s", path);
    counters = c; /* an older mapping stays mapped: another thread may still count into it */
}

static void count(enum fid f) {
    struct counter *c = counters;
    if (!c) return;
    __atomic_fetch_add(&c[C_TOTAL].count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c[f].count, 1, __ATOMIC_RELAXED);
}

/* ---- scenario parsing --------------------------------------------------------------- */
/* Splits "key=value key2=\"a b\"" in place; returns the number of pairs. */
static int split_pairs(char *s, char **keys, char **vals, int max) {
    int n = 0;
    while (*s && n < max) {
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') break;
        keys[n] = s;
        while (*s && *s != '=' && *s != ' ' && *s != '\t') s++;
        if (*s != '=') { vals[n++] = s; if (*s) *s++ = 0; continue; }
        *s++ = 0;
        if (*s == '"') {
            vals[n] = ++s;
            while (*s && *s != '"') s++;
        } else {
            vals[n] = s;
            while (*s && *s != ' ' && *s != '\t') s++;
        }
        n++;
        if (*s) *s++ = 0;
    }
    return n;
}

static unsigned long long num(const char *v) { return strtoull(v, NULL, 0); }

static unsigned parse_fields(char *v, int line) {
    unsigned bits = 0;
    for (char *t = strtok(v, ","); t; t = strtok(NULL, ",")) {
        int i;
        for (i = 0; i < F_COUNT; i++) if (strcmp(t, FIELD_NAMES[i]) == 0) break;
        if (i == F_COUNT) fprintf(stderr, "fake-nvml: line %d: unknown field %s\n", line, t);
        else bits |= 1u << i;
    }
    return bits;
}

static int parse_gpu(struct scenario *s, char **k, char **v, int n, int line) {
    if (s->ngpu >= MAXGPU) return -1;
    int idx = s->ngpu++;
    struct gpu *g = &s->gpus[idx];
    snprintf(g->uuid, sizeof g->uuid, "GPU-00000000-0000-0000-0000-%012d", idx);
    snprintf(g->name, sizeof g->name, "Fake GPU");
    snprintf(g->bus, sizeof g->bus, "00000000:%02X:00.0", 0x10 + idx);
    g->pstate = 0;
    g->pcie_delay_ms = 20; /* what nvmlDeviceGetPcieThroughput costs on real drivers */
    for (int i = 0; i < n; i++) {
        const char *key = k[i], *val = v[i];
        if (!strcmp(key, "uuid")) snprintf(g->uuid, sizeof g->uuid, "%s", val);
        else if (!strcmp(key, "name")) snprintf(g->name, sizeof g->name, "%s", val);
        else if (!strcmp(key, "bus")) snprintf(g->bus, sizeof g->bus, "%s", val);
        else if (!strcmp(key, "util")) g->util = (unsigned)num(val);
        else if (!strcmp(key, "memutil")) g->memutil = (unsigned)num(val);
        else if (!strcmp(key, "total")) g->total = num(val);
        else if (!strcmp(key, "used")) g->used = num(val);
        else if (!strcmp(key, "free")) g->free = num(val);
        else if (!strcmp(key, "reserved")) g->reserved = num(val);
        else if (!strcmp(key, "temp")) g->temp = (unsigned)num(val);
        else if (!strcmp(key, "power_mw")) g->power_mw = (unsigned)num(val);
        else if (!strcmp(key, "energy_mj")) g->energy_mj = num(val);
        else if (!strcmp(key, "sm_mhz")) g->sm_mhz = (unsigned)num(val);
        else if (!strcmp(key, "mem_mhz")) g->mem_mhz = (unsigned)num(val);
        else if (!strcmp(key, "reasons")) g->reasons = num(val);
        else if (!strcmp(key, "ecc_corrected")) g->ecc_corr = num(val);
        else if (!strcmp(key, "ecc_uncorrected")) g->ecc_uncorr = num(val);
        else if (!strcmp(key, "replay")) g->replay = (unsigned)num(val);
        else if (!strcmp(key, "pstate")) g->pstate = (int)num(val);
        else if (!strcmp(key, "lost")) g->lost = (int)num(val);
        else if (!strcmp(key, "mig")) g->mig_mode = (int)num(val);
        else if (!strcmp(key, "pcie_tx_kbs")) g->pcie_tx = (unsigned)num(val);
        else if (!strcmp(key, "pcie_rx_kbs")) g->pcie_rx = (unsigned)num(val);
        else if (!strcmp(key, "pcie_delay_ms")) g->pcie_delay_ms = (int)num(val);
        else if (!strcmp(key, "unsupported")) g->unsupported = parse_fields(v[i], line);
        else if (!strcmp(key, "unknown")) {
            if (!strcmp(val, "all")) g->unknown_all = 1;
            else g->unknown = parse_fields(v[i], line);
        }
        else if (!strcmp(key, "no_permission")) g->no_permission = (int)num(val);
        else if (!strcmp(key, "util_buffer")) g->util_buffer = (int)num(val);
        else fprintf(stderr, "fake-nvml: line %d: unknown gpu key %s\n", line, key);
    }
    return 0;
}

static struct scenario *parse_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "fake-nvml: cannot read %s: %s\n", path, strerror(errno)); return NULL; }
    struct scenario *s = calloc(1, sizeof *s);
    snprintf(s->driver, sizeof s->driver, "550.54.15");
    char buf[4096], *k[64], *v[64];
    int line = 0;
    while (fgets(buf, sizeof buf, f)) {
        line++;
        buf[strcspn(buf, "\r\n")] = 0;
        char *p = buf;
        while (*p == ' ') p++;
        if (!*p || *p == '#') continue;
        char *kind = p;
        while (*p && *p != ' ') p++;
        if (*p) *p++ = 0;
        int n = split_pairs(p, k, v, 64);
        if (!strcmp(kind, "driver")) {
            for (int i = 0; i < n; i++)
                if (!strcmp(k[i], "version")) snprintf(s->driver, sizeof s->driver, "%s", v[i]);
        } else if (!strcmp(kind, "init")) {
            for (int i = 0; i < n; i++) if (!strcmp(k[i], "error")) s->init_error = (int)num(v[i]);
        } else if (!strcmp(kind, "gpu")) {
            parse_gpu(s, k, v, n, line);
        } else if (!strcmp(kind, "mig")) {
            int g = -1; struct mig m = {0};
            m.ci = 0;
            for (int i = 0; i < n; i++) {
                if (!strcmp(k[i], "gpu")) g = (int)num(v[i]);
                else if (!strcmp(k[i], "gi")) m.gi = (unsigned)num(v[i]);
                else if (!strcmp(k[i], "ci")) m.ci = (unsigned)num(v[i]);
                else if (!strcmp(k[i], "uuid")) snprintf(m.uuid, sizeof m.uuid, "%s", v[i]);
                else if (!strcmp(k[i], "total")) m.total = num(v[i]);
                else if (!strcmp(k[i], "used")) m.used = num(v[i]);
                else if (!strcmp(k[i], "free")) m.free = num(v[i]);
            }
            if (g >= 0 && g < MAXGPU && s->nmig[g] < MAXMIG) {
                m.gpu = g;
                s->migs[g][s->nmig[g]++] = m;
            }
        } else if (!strcmp(kind, "proc")) {
            if (s->nproc >= MAXPROC) continue;
            struct proc *pr = &s->procs[s->nproc++];
            memset(pr, 0, sizeof *pr);
            pr->mig = -1;
            for (int i = 0; i < n; i++) {
                if (!strcmp(k[i], "gpu")) pr->gpu = (int)num(v[i]);
                else if (!strcmp(k[i], "pid")) pr->pid = (unsigned)num(v[i]);
                else if (!strcmp(k[i], "mem")) { pr->mem = num(v[i]); pr->has_mem = 1; }
                else if (!strcmp(k[i], "sm")) { pr->sm = (unsigned)num(v[i]); pr->has_sm = 1; }
                else if (!strcmp(k[i], "memutil")) pr->memutil = (unsigned)num(v[i]);
                else if (!strcmp(k[i], "mig")) pr->mig = (int)num(v[i]);
                else if (!strcmp(k[i], "late")) pr->late = (int)num(v[i]);
                else if (!strcmp(k[i], "mps")) pr->mps = (int)num(v[i]);
                else if (!strcmp(k[i], "future")) pr->future = (int)num(v[i]);
            }
        } else if (!strcmp(kind, "xid")) {
            if (s->nxid >= MAXXID) continue;
            struct xid *x = &s->xids[s->nxid++];
            memset(x, 0, sizeof *x);
            for (int i = 0; i < n; i++) {
                if (!strcmp(k[i], "gpu")) x->gpu = (int)num(v[i]);
                else if (!strcmp(k[i], "code")) x->code = num(v[i]);
                else if (!strcmp(k[i], "seq")) x->seq = num(v[i]);
            }
        } else {
            fprintf(stderr, "fake-nvml: line %d: unknown record %s\n", line, kind);
        }
    }
    fclose(f);
    return s;
}

/* Re-reads the scenario when the file changed. Caller holds the lock. */
static void maybe_reload(void) {
    const char *path = getenv("FAKE_NVML_SCENARIO");
    if (!path || !*path) {
        if (!sc) sc = calloc(1, sizeof *sc);
        return;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!sc) sc = calloc(1, sizeof *sc);
        return;
    }
    if (sc && st.st_ino == sc_stat.st_ino && st.st_size == sc_stat.st_size &&
        st.st_mtim.tv_sec == sc_stat.st_mtim.tv_sec && st.st_mtim.tv_nsec == sc_stat.st_mtim.tv_nsec)
        return;
    struct scenario *fresh = parse_file(path);
    if (!fresh) { if (!sc) sc = calloc(1, sizeof *sc); return; }
    free(sc);
    sc = fresh;
    sc_stat = st;
    memset(revealed, 0, sizeof revealed);
}

static unsigned long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
}

/* ---- helpers for device calls ------------------------------------------------------- */
#define ENTER(f) count(C_##f); pthread_mutex_lock(&lock); nvmlReturn_t _r = NVML_SUCCESS
#define LEAVE(r) do { _r = (r); goto out; } while (0)
#define EXIT out: pthread_mutex_unlock(&lock); return _r

/* Resolves a handle to its GPU (and MIG slot); NULL with *err set when it cannot answer. */
static struct gpu *resolve(nvmlDevice_t h, int *mig, nvmlReturn_t *err) {
    if (!initialized) { *err = NVML_ERROR_UNINITIALIZED; return NULL; }
    if (!h || h->gpu < 0 || h->gpu >= sc->ngpu) { *err = NVML_ERROR_INVALID_ARGUMENT; return NULL; }
    struct gpu *g = &sc->gpus[h->gpu];
    if (g->lost) { *err = NVML_ERROR_GPU_IS_LOST; return NULL; }
    if (g->unknown_all) { *err = NVML_ERROR_UNKNOWN; return NULL; }
    if (mig) *mig = h->kind == 1 ? h->mig : -1;
    if (h->kind == 1 && (h->mig >= sc->nmig[h->gpu] || !g->mig_mode)) {
        *err = NVML_ERROR_INVALID_ARGUMENT;
        return NULL;
    }
    return g;
}

static int supported(struct gpu *g, enum field f) { return !(g->unsupported & (1u << f)); }

#define DEVICE(h, field) \
    int _mig; struct gpu *g = resolve(h, &_mig, &_r); \
    if (!g) goto out; \
    if (!supported(g, field)) LEAVE(NVML_ERROR_NOT_SUPPORTED); \
    if (g->unknown & (1u << (field))) LEAVE(NVML_ERROR_UNKNOWN); \
    (void)_mig

/* ---- the API ------------------------------------------------------------------------ */
const char *nvmlErrorString(nvmlReturn_t r) {
    count(C_nvmlErrorString);
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t do_init(void) {
    map_counters();
    pthread_mutex_lock(&lock);
    maybe_reload();
    nvmlReturn_t r = sc->init_error;
    if (r == NVML_SUCCESS) {
        initialized++;
        for (int i = 0; i < MAXGPU; i++) {
            gpu_handles[i] = (handle_t){0, i, -1};
            event_handles[i] = (handle_t){0, i, -1};
            for (int m = 0; m < MAXMIG; m++) mig_handles[i][m] = (handle_t){1, i, m};
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    map_counters();
    count(C_nvmlInitWithFlags);
    return do_init();
}

nvmlReturn_t nvmlInit_v2(void) {
    map_counters();
    count(C_nvmlInit_v2);
    return do_init();
}

nvmlReturn_t nvmlShutdown(void) {
    ENTER(nvmlShutdown);
    if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
    initialized--;
    EXIT;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER(nvmlSystemGetDriverVersion);
    if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
    if (strlen(sc->driver) + 1 > length) LEAVE(NVML_ERROR_INSUFFICIENT_SIZE);
    strcpy(version, sc->driver);
    EXIT;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) {
    ENTER(nvmlDeviceGetCount_v2);
    if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
    maybe_reload();
    *n = (unsigned)sc->ngpu;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER(nvmlDeviceGetHandleByIndex_v2);
    if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
    maybe_reload();
    if ((int)index >= sc->ngpu) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (sc->gpus[index].lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
    /* NVML counts GPUs the caller may not open (cgroup device rules, permissions). */
    if (sc->gpus[index].no_permission) LEAVE(NVML_ERROR_NO_PERMISSION);
    *device = &gpu_handles[index];
    EXIT;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t h, unsigned int *index) {
    ENTER(nvmlDeviceGetIndex);
    struct gpu *g = resolve(h, NULL, &_r);
    if (!g) goto out;
    *index = (unsigned)h->gpu;
    EXIT;
}

static nvmlReturn_t copy_str(const char *src, char *dst, unsigned int length) {
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *name, unsigned int length) {
    ENTER(nvmlDeviceGetName);
    int mig;
    struct gpu *g = resolve(h, &mig, &_r);
    if (!g) goto out;
    _r = copy_str(g->name, name, length);
    EXIT;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *uuid, unsigned int length) {
    ENTER(nvmlDeviceGetUUID);
    int mig;
    struct gpu *g = resolve(h, &mig, &_r);
    if (!g) goto out;
    _r = copy_str(mig >= 0 ? sc->migs[h->gpu][mig].uuid : g->uuid, uuid, length);
    EXIT;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t h, nvmlPciInfo_t *pci) {
    ENTER(nvmlDeviceGetPciInfo_v3);
    struct gpu *g = resolve(h, NULL, &_r);
    if (!g) goto out;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", g->bus);
    /* The legacy field is 16 bytes: the bus id is cut, as the driver does. */
    memcpy(pci->busIdLegacy, g->bus, sizeof pci->busIdLegacy - 1);
    unsigned dom = 0, bus = 0, dev = 0;
    sscanf(g->bus, "%x:%x:%x", &dom, &bus, &dev);
    pci->domain = dom; pci->bus = bus; pci->device = dev;
    pci->pciDeviceId = 0x233010DE; /* H100 SXM5's device id, NVIDIA's vendor id */
    EXIT;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t h, nvmlUtilization_t *u) {
    ENTER(nvmlDeviceGetUtilizationRates);
    DEVICE(h, F_UTIL);
    /* Real NVML: no device-level utilization while MIG mode is on. */
    if (g->mig_mode || _mig >= 0) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    u->gpu = g->util;
    u->memory = g->memutil;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m) {
    ENTER(nvmlDeviceGetMemoryInfo);
    DEVICE(h, F_MEMORY);
    if (_mig >= 0) {
        struct mig *mi = &sc->migs[h->gpu][_mig];
        *m = (nvmlMemory_t){mi->total, mi->free, mi->used};
    } else {
        /* v1 `used` is allocated + reserved; v2 separates the two (nvml.h). */
        *m = (nvmlMemory_t){g->total, g->free, g->used + g->reserved};
    }
    EXIT;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *m) {
    ENTER(nvmlDeviceGetMemoryInfo_v2);
    DEVICE(h, F_MEMORY);
    if (!supported(g, F_MEMORY_V2)) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (g->unknown & (1u << F_MEMORY_V2)) LEAVE(NVML_ERROR_UNKNOWN);
    if (m->version != NVML_MEMORY_V2_VERSION) LEAVE(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (_mig >= 0) {
        struct mig *mi = &sc->migs[h->gpu][_mig];
        m->total = mi->total; m->free = mi->free; m->used = mi->used; m->reserved = 0;
    } else {
        m->total = g->total; m->free = g->free; m->used = g->used; m->reserved = g->reserved;
    }
    EXIT;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t h, int sensor, unsigned int *t) {
    ENTER(nvmlDeviceGetTemperature);
    DEVICE(h, F_TEMPERATURE);
    if (sensor != 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *t = g->temp;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t h, unsigned int *mw) {
    ENTER(nvmlDeviceGetPowerUsage);
    DEVICE(h, F_POWER);
    *mw = g->power_mw;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t h, unsigned long long *mj) {
    ENTER(nvmlDeviceGetTotalEnergyConsumption);
    DEVICE(h, F_ENERGY);
    *mj = g->energy_mj;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t h, int type, unsigned int *mhz) {
    ENTER(nvmlDeviceGetClockInfo);
    DEVICE(h, F_CLOCKS);
    switch (type) {
    case 0: case 1: *mhz = g->sm_mhz; break; /* graphics and SM share a clock domain */
    case 2: *mhz = g->mem_mhz; break;
    default: LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    }
    EXIT;
}

static nvmlReturn_t reasons(nvmlDevice_t h, unsigned long long *r) {
    nvmlReturn_t _r = NVML_SUCCESS;
    DEVICE(h, F_CLOCK_EVENTS);
    *r = g->reasons;
out:
    return _r;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t h, unsigned long long *r) {
    count(C_nvmlDeviceGetCurrentClocksEventReasons);
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = reasons(h, r);
    pthread_mutex_unlock(&lock);
    return ret;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t h, unsigned long long *r) {
    count(C_nvmlDeviceGetCurrentClocksThrottleReasons);
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = reasons(h, r);
    pthread_mutex_unlock(&lock);
    return ret;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t h, int type, int counter,
                                         unsigned long long *n) {
    ENTER(nvmlDeviceGetTotalEccErrors);
    DEVICE(h, F_ECC);
    if (counter != 0 && counter != 1) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (type == 0) *n = g->ecc_corr;
    else if (type == 1) *n = g->ecc_uncorr;
    else LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    EXIT;
}

nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t h, unsigned int *n) {
    ENTER(nvmlDeviceGetPcieReplayCounter);
    DEVICE(h, F_PCIE_REPLAY);
    *n = g->replay;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t h, int *p) {
    ENTER(nvmlDeviceGetPerformanceState);
    DEVICE(h, F_PSTATE);
    *p = g->pstate;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t h, int counter, unsigned int *kbs) {
    count(C_nvmlDeviceGetPcieThroughput);
    pthread_mutex_lock(&lock);
    nvmlReturn_t _r = NVML_SUCCESS;
    int delay = 0;
    DEVICE(h, F_PCIE_THROUGHPUT);
    if (counter == 0) *kbs = g->pcie_tx;
    else if (counter == 1) *kbs = g->pcie_rx;
    else LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    delay = g->pcie_delay_ms;
out:
    pthread_mutex_unlock(&lock);
    /* The real call samples the link for ~20 ms; it blocks its caller that long. */
    if (_r == NVML_SUCCESS && delay > 0) usleep((useconds_t)delay * 1000);
    return _r;
}

static int proc_visible(const struct proc *p, int gpu, int mig, int mps) {
    if (p->gpu != gpu || p->mig != mig || p->mps != mps) return 0;
    return !p->late || revealed[gpu];
}

/* Bytes per process entry this "driver" writes: 32 on the R535 drivers that carried
 * usedGpuCcProtectedMemory in nvmlProcessInfo_v3_t (535.43-535.86 and 535.104.05 onward
 * on that branch), 24 on everything else. The caller's idea of the layout does not matter:
 * the driver writes its own. */
static size_t process_entry_size(void) {
    unsigned major = 0, minor = 0, patch = 0;
    sscanf(sc->driver, "%u.%u.%u", &major, &minor, &patch);
    if (major != 535) return sizeof(nvmlProcessInfo_t);
    if ((minor >= 43 && minor <= 86) || minor > 104 || (minor == 104 && patch >= 5))
        return sizeof(nvmlProcessInfoCc_t);
    return sizeof(nvmlProcessInfo_t);
}

static nvmlReturn_t list_processes(nvmlDevice_t h, unsigned int *n, void *out, int mps) {
    nvmlReturn_t _r = NVML_SUCCESS;
    DEVICE(h, F_PROCESSES);
    if (!n) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    unsigned have = 0;
    for (int i = 0; i < sc->nproc; i++) have += proc_visible(&sc->procs[i], h->gpu, _mig, mps);
    if (have > *n || (!out && have > 0)) {
        /* Real NVML: the caller's buffer is too small; *n says how many there are now. */
        *n = have;
        if (!out || *n == 0) revealed[h->gpu] = 1; /* processes that start right after */
        LEAVE(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    size_t size = process_entry_size();
    unsigned j = 0;
    for (int i = 0; i < sc->nproc; i++) {
        struct proc *p = &sc->procs[i];
        if (!proc_visible(p, h->gpu, _mig, mps)) continue;
        nvmlProcessInfoCc_t e = {0};
        e.pid = p->pid;
        e.usedGpuMemory = p->has_mem ? p->mem : NVML_VALUE_NOT_AVAILABLE;
        if (_mig >= 0) {
            e.gpuInstanceId = sc->migs[h->gpu][_mig].gi;
            e.computeInstanceId = sc->migs[h->gpu][_mig].ci;
        } else {
            e.gpuInstanceId = NO_INSTANCE;
            e.computeInstanceId = NO_INSTANCE;
        }
        e.usedGpuCcProtectedMemory = 0;
        memcpy((char *)out + j * size, &e, size);
        j++;
    }
    *n = j;
out:
    return _r;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *n, void *infos) {
    count(C_nvmlDeviceGetComputeRunningProcesses_v3);
    pthread_mutex_lock(&lock);
    nvmlReturn_t r = list_processes(h, n, infos, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

/* MPS clients are listed here only; the compute list holds the MPS server. */
nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *n,
                                                        void *infos) {
    count(C_nvmlDeviceGetMPSComputeRunningProcesses_v3);
    pthread_mutex_lock(&lock);
    nvmlReturn_t r = list_processes(h, n, infos, 1);
    pthread_mutex_unlock(&lock);
    return r;
}

/* A sample stamped ~11.6 days ahead: a bogus timestamp as drivers have been seen to give. */
#define FUTURE_US 1000000000000ULL

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t h, nvmlProcessUtilizationSample_t *u,
                                             unsigned int *n, unsigned long long last_seen) {
    ENTER(nvmlDeviceGetProcessUtilization);
    DEVICE(h, F_PROCESS_UTIL);
    if (g->mig_mode || _mig >= 0) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (!n) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    /* One sample per process per poll, stamped now (or far ahead for `future=1`), returned
     * when newer than last_seen. */
    unsigned long long now = now_us();
    unsigned have = 0;
    for (int i = 0; i < sc->nproc; i++) {
        struct proc *p = &sc->procs[i];
        unsigned long long ts = p->future ? now + FUTURE_US : now;
        have += p->gpu == h->gpu && p->mig < 0 && (!p->late || revealed[h->gpu]) && p->has_sm &&
                ts > last_seen;
    }
    if (have == 0) LEAVE(NVML_ERROR_NOT_FOUND);
    /* `util_buffer=N`: the size query answers a fixed N, and the fill call hands back all N
     * entries, the unused ones zero (pid 0, timestamp 0). */
    unsigned want = g->util_buffer > 0 && (unsigned)g->util_buffer > have ? (unsigned)g->util_buffer
                                                                         : have;
    if (!u || *n < want) { *n = want; LEAVE(NVML_ERROR_INSUFFICIENT_SIZE); }
    unsigned j = 0;
    for (int i = 0; i < sc->nproc; i++) {
        struct proc *p = &sc->procs[i];
        unsigned long long ts = p->future ? now + FUTURE_US : now;
        if (p->gpu != h->gpu || p->mig >= 0 || (p->late && !revealed[h->gpu]) || !p->has_sm ||
            ts <= last_seen)
            continue;
        u[j] = (nvmlProcessUtilizationSample_t){p->pid, ts, p->sm, p->memutil, 0, 0};
        j++;
    }
    for (; j < want; j++) u[j] = (nvmlProcessUtilizationSample_t){0, 0, 0, 0, 0, 0};
    *n = want;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *current, unsigned int *pending) {
    ENTER(nvmlDeviceGetMigMode);
    DEVICE(h, F_MIG);
    *current = *pending = (unsigned)g->mig_mode;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t h, unsigned int *n) {
    ENTER(nvmlDeviceGetMaxMigDeviceCount);
    DEVICE(h, F_MIG);
    *n = MAXMIG;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t h, unsigned int index,
                                                 nvmlDevice_t *mig) {
    ENTER(nvmlDeviceGetMigDeviceHandleByIndex);
    DEVICE(h, F_MIG);
    if (!g->mig_mode) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if ((int)index >= sc->nmig[h->gpu]) LEAVE(NVML_ERROR_NOT_FOUND);
    *mig = &mig_handles[h->gpu][index];
    EXIT;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t h, unsigned int *id) {
    ENTER(nvmlDeviceGetGpuInstanceId);
    DEVICE(h, F_MIG);
    if (_mig < 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *id = sc->migs[h->gpu][_mig].gi;
    EXIT;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t h, unsigned int *id) {
    ENTER(nvmlDeviceGetComputeInstanceId);
    DEVICE(h, F_MIG);
    if (_mig < 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *id = sc->migs[h->gpu][_mig].ci;
    EXIT;
}

/* ---- events ------------------------------------------------------------------------- */
struct event_set { unsigned long long mask[MAXGPU]; unsigned long long seen; int broken; };
typedef struct event_set *nvmlEventSet_t;

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t h, unsigned long long *types) {
    ENTER(nvmlDeviceGetSupportedEventTypes);
    DEVICE(h, F_EVENTS);
    *types = NVML_EVENT_TYPE_XID | NVML_EVENT_TYPE_SBE | NVML_EVENT_TYPE_DBE;
    EXIT;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    ENTER(nvmlEventSetCreate);
    if (!initialized) LEAVE(NVML_ERROR_UNINITIALIZED);
    *set = calloc(1, sizeof **set);
    EXIT;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t h, unsigned long long types, nvmlEventSet_t set) {
    ENTER(nvmlDeviceRegisterEvents);
    DEVICE(h, F_EVENTS);
    if (!set || _mig >= 0) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    set->mask[h->gpu] |= types;
    /* Like the driver, a set sees only events that happen after registration. */
    for (int i = 0; i < sc->nxid; i++)
        if (sc->xids[i].seq > set->seen) set->seen = sc->xids[i].seq;
    EXIT;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms) {
    count(C_nvmlEventSetWait_v2);
    if (!set || !data) return NVML_ERROR_INVALID_ARGUMENT;
    /* Poll the scenario every 50 ms: an XID reaches the agent within one poll, and the
     * waiting thread costs the agent's process about 0.05 % of a core (at 5 ms it was 0.55 %,
     * more than the rest of the agent: bench/footprint), where a real driver blocks in the
     * kernel and costs nothing. */
    for (unsigned waited = 0;; waited += 50) {
        pthread_mutex_lock(&lock);
        if (!initialized) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
        maybe_reload();
        /* A GPU of the set fell off the bus: the wait answers GPU_IS_LOST, and this set stays
         * broken after the GPU is back; only a new set sees its events again. */
        for (int i = 0; i < sc->ngpu && !set->broken; i++)
            if (set->mask[i] && sc->gpus[i].lost) set->broken = 1;
        if (set->broken) { pthread_mutex_unlock(&lock); return NVML_ERROR_GPU_IS_LOST; }
        struct xid *best = NULL;
        for (int i = 0; i < sc->nxid; i++) {
            struct xid *x = &sc->xids[i];
            if (x->seq <= set->seen || x->gpu < 0 || x->gpu >= MAXGPU) continue;
            if (!(set->mask[x->gpu] & NVML_EVENT_TYPE_XID)) continue;
            if (!best || x->seq < best->seq) best = x;
        }
        if (best) {
            set->seen = best->seq;
            data->device = &event_handles[best->gpu];
            data->eventType = NVML_EVENT_TYPE_XID;
            data->eventData = best->code;
            data->gpuInstanceId = NO_INSTANCE;
            data->computeInstanceId = NO_INSTANCE;
            pthread_mutex_unlock(&lock);
            return NVML_SUCCESS;
        }
        pthread_mutex_unlock(&lock);
        if (waited >= timeout_ms) return NVML_ERROR_TIMEOUT;
        usleep(50000);
    }
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    count(C_nvmlEventSetFree);
    free(set);
    return NVML_SUCCESS;
}
