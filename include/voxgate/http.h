/* The HTTP layer's seam for handlers: request accessors, replies, errors,
 * the router's route table and request ids. Handlers see vg_req only;
 * libmicrohttpd stays inside src/http/. */
#ifndef VOXGATE_HTTP_H
#define VOXGATE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VG_REQID_MAX 128

/* ---- request ids (src/http/reqid.c) ---- */

/* 1-128 chars of [A-Za-z0-9._:-] */
bool vg_reqid_valid(const char *s, size_t len);
/* A fresh id: 32 lowercase hex chars (128 random bits from a per-thread
 * generator seeded by getrandom), NUL-terminated. */
void vg_reqid_generate(char out[33]);

#endif
