/* A real redis-server for the Redis unit tests, started on a free
 * loopback port and stopped (SIGKILL, also out of SIGSTOP) by the test:
 * no mocks. Shared by test_kv_redis.c and test_redis_async.c. */
#ifndef VOXGATE_TEST_REDIS_SERVER_H
#define VOXGATE_TEST_REDIS_SERVER_H

#include <stdint.h>
#include <sys/types.h>

#define CMD_TIMEOUT_MS 150

typedef struct server {
    pid_t pid;
    int port;
    char sock[64];     /* "" = no unix socket */
} server;

int free_port(void);
void sleep_ms(unsigned ms);
uint64_t now_ms(void);
/* Start redis-server (requirepass when pass is set, a unix socket when
 * s->sock is set) and wait until it answers; fails the test otherwise. */
void server_start(server *s, const char *pass);
void server_stop(server *s);

#endif
