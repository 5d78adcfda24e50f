/* The test redis-server (see redis_server.h). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis_server.h"
#include "voxgate/util.h"
int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

void sleep_ms(unsigned ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

uint64_t now_ms(void) { return vg_mono_ns() / 1000000u; }

void server_start(server *s, const char *pass)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        const char *av[16] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--loglevel", "warning"};
        int n = 11;
        if (pass) {
            av[n++] = "--requirepass";
            av[n++] = pass;
        }
        if (s->sock[0]) {
            av[n++] = "--unixsocket";
            av[n++] = s->sock;
        }
        av[n] = NULL;
        execvp("redis-server", (char *const *)av);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisContext *c = redisConnect("127.0.0.1", s->port);
        bool up = c && !c->err;
        redisFree(c);
        if (up)
            return;
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            fail_msg("redis-server exited (is it installed? scripts/deps.sh test)");
        sleep_ms(10);
    }
    fail_msg("redis-server did not start on port %d", s->port);
}

void server_stop(server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGCONT);
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}
