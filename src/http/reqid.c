/* Request ids: checking ids that clients send in X-Request-Id, and
 * generating fresh ones. Ids only need to be unique, not secret, so a
 * per-thread xoshiro256** seeded once from getrandom() does the job
 * without a syscall or a lock per request. */
#include "voxgate/http.h"

#include <pthread.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

bool vg_reqid_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > VG_REQID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

typedef struct rng {
    uint64_t s[4];
    bool seeded;
} rng;

static _Thread_local rng tl_rng;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t xoshiro_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* A forked child would otherwise replay its parent's sequence. Only the
 * forking thread survives in the child, and this runs on it. */
static void reseed_in_child(void) { tl_rng.seeded = false; }

static void register_atfork(void) { pthread_atfork(NULL, NULL, reseed_in_child); }

static bool seed_from_kernel(uint64_t s[4])
{
    unsigned char *p = (unsigned char *)s;
    size_t got = 0;
    while (got < 4 * sizeof(uint64_t)) {
        ssize_t n = getrandom(p + got, 4 * sizeof(uint64_t) - got, 0);
        if (n < 0)
            return false; /* EINTR included: the fallback is good enough */
        got += (size_t)n;
    }
    return true;
}

/* Without getrandom (seccomp, old kernels) mix what differs between
 * threads and processes; uniqueness, not secrecy, is what ids need. */
static void seed_fallback(uint64_t s[4])
{
    struct timespec a, b;
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    uint64_t x = (uint64_t)a.tv_sec * 1000000000u + (uint64_t)a.tv_nsec;
    x ^= rotl((uint64_t)b.tv_nsec, 21) ^ rotl((uint64_t)getpid(), 40);
    x ^= (uint64_t)(uintptr_t)&tl_rng;
    for (int i = 0; i < 4; i++)
        s[i] = splitmix64(&x);
}

static void rng_seed(rng *r)
{
    pthread_once(&atfork_once, register_atfork);
    if (!seed_from_kernel(r->s))
        seed_fallback(r->s);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
        r->s[0] = 1; /* the all-zero state is a fixed point */
    r->seeded = true;
}

static void put_hex64(char *o, uint64_t v)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        o[i] = hex[v & 15];
}

void vg_reqid_generate(char out[33])
{
    rng *r = &tl_rng;
    if (!r->seeded)
        rng_seed(r);
    put_hex64(out, xoshiro_next(r));
    put_hex64(out + 16, xoshiro_next(r));
    out[32] = '\0';
}
