/* The floor for bench/startup.sh: posix_spawn `svc mark OUT` N times and
 * nothing else (no supervision), then wait to be killed. What start-up of
 * N services costs on this machine with a supervisor that costs nothing.
 * Not part of coffeyd. Usage: floor SVC N OUT */
#include <spawn.h>
#include <stdlib.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	if (argc < 4)
		return 100;
	char *av[] = {argv[1], "mark", argv[3], 0};
	int n = atoi(argv[2]);
	for (int i = 0; i < n; i++) {
		pid_t p;
		posix_spawn(&p, argv[1], 0, 0, av, environ);
	}
	pause();
	return 0;
}
