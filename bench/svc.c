/* The service every supervisor runs in bench/compare.sh, so that all of them
 * run the same program and the stamps are taken the same way. Not part of
 * coffeyd. Mode and output file come from argv[1] and argv[2], or from
 * BENCH_MODE and BENCH_OUT (peers run it as their service's `run`, with no
 * fewer than two arguments: s6-supervise passes the service's name as
 * argv[1], and they pass their environment on).
 *   mark  append "m NS\n" (CLOCK_REALTIME ns), then exec /bin/sleep 3600:
 *         start-up ends at the last mark, and the service is then a sleep
 *   cycle append "s NS\n" first thing, sleep BENCH_MS ms (default 1200),
 *         append "e NS\n", exit 0: exit -> exec is the next s minus this e
 *   fail  append "f\n", exit 1: the crash loop's restarts are the lines
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void stamp(const char *out, char tag)
{
	struct timespec ts;
	char buf[48];
	int fd, n;

	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(buf, sizeof buf, "%c %lld\n", tag,
		     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
	fd = open(out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		_exit(111);
	if (write(fd, buf, n) != n)
		_exit(111);
	close(fd);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[1] : getenv("BENCH_MODE");
	const char *out = argc > 2 ? argv[2] : getenv("BENCH_OUT");
	const char *ms = getenv("BENCH_MS");
	if (!mode || !out)
		return 100;
	if (!strcmp(mode, "mark")) {
		stamp(out, 'm');
		execl("/bin/sleep", "sleep", "3600", (char *)0);
		return 111;
	}
	if (!strcmp(mode, "cycle")) {
		long t = ms ? atol(ms) : 1200;
		struct timespec d = { t / 1000, (t % 1000) * 1000000L };
		stamp(out, 's');
		nanosleep(&d, 0);
		stamp(out, 'e');
		return 0;
	}
	if (!strcmp(mode, "fail")) {
		stamp(out, 'f');
		return 1;
	}
	return 100;
}
