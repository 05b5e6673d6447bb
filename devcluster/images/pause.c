/* The pod sandbox's process: sleeps, reaps orphans, exits 0 on SIGINT or SIGTERM.
 * Its image is the sandbox image of the real node's containerd (no registry to pull one). */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
