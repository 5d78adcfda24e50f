/* Single-flight and bulkheads, the two admission tools of the gateway
 * (SPEC §5 "Order of a gateway request").
 *
 * Single-flight: identical concurrent misses share one provider call. A
 * flight is keyed by the request's canonical cache key; the first request
 * leads it (runs the call), later identical ones join it; finishing hands
 * the result to every member and removes the flight, so the next miss
 * starts afresh. A member that stops waiting (its own deadline) simply
 * ignores the callback when it comes: the flight keeps no other state.
 *
 * Bulkhead: at most max_concurrency calls to one provider at once, up to
 * max_queue more waiting in FIFO order; past that the caller is refused
 * at once and tries the next provider of its chain. */
#ifndef VOXGATE_FLIGHT_H
#define VOXGATE_FLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- single-flight ---- */

typedef struct vg_flights vg_flights;
typedef struct vg_flight vg_flight;
/* Runs once per member when the flight finishes, on the finishing
 * thread, outside every lock. result is the finisher's; valid during
 * the call. */
typedef void (*vg_flight_cb)(void *ud, void *result);

vg_flights *vg_flights_new(size_t max_flights);
/* Flights still open are dropped without calling their members. */
void vg_flights_free(vg_flights *t);

/* Join the flight for key, creating it when there is none (*leader set:
 * the caller runs the call and must vg_flight_finish it). VG_OK,
 * VG_ETOOBIG (max_flights are open and this would be a new one; nothing
 * joined) or VG_ENOMEM. */
int vg_flight_join(vg_flights *t, const char *key, size_t klen, vg_flight_cb cb, void *ud,
                   vg_flight **f, bool *leader);
/* True when a flight for key is open now (a join would not lead). */
bool vg_flight_exists(vg_flights *t, const char *key, size_t klen);
/* Members that joined f so far, the leader included. */
size_t vg_flight_members(vg_flights *t, vg_flight *f);
/* Close f: later joins start a new flight; every member's cb runs with
 * result; then f is freed. */
void vg_flight_finish(vg_flights *t, vg_flight *f, void *result);
size_t vg_flights_open(vg_flights *t);

/* ---- bulkheads ---- */

typedef struct vg_bulkhead vg_bulkhead;
/* A queued acquire got its slot: runs on the thread that released it,
 * outside the bulkhead's lock. The slot is the callee's to release. */
typedef void (*vg_slot_cb)(void *ud);

vg_bulkhead *vg_bulkhead_new(uint32_t max_concurrency, uint32_t max_queue);
void vg_bulkhead_free(vg_bulkhead *b);
/* VG_OK: a slot is the caller's now. VG_NOTFOUND: queued; cb(ud) runs
 * when a slot frees; *ticket names the wait for vg_bulkhead_cancel.
 * VG_ETOOBIG: every slot is busy and the queue is full. */
int vg_bulkhead_acquire(vg_bulkhead *b, vg_slot_cb cb, void *ud, uint64_t *ticket);
/* Return a slot: it goes to the oldest waiter (its cb runs here), or back. */
void vg_bulkhead_release(vg_bulkhead *b);
/* Stop waiting: true when the wait was still queued (its cb never runs);
 * false when the slot was already handed over (cb ran or is running). */
bool vg_bulkhead_cancel(vg_bulkhead *b, uint64_t ticket);

typedef struct vg_bulkhead_stats {
    uint32_t in_use, queued;
    uint64_t rejected;
} vg_bulkhead_stats;
void vg_bulkhead_stats_get(vg_bulkhead *b, vg_bulkhead_stats *out);

#endif
