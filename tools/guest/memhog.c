/*
 * memhog: make a test guest really use memory, at a controlled pace.
 *
 * The nova-balloon functional tests need a guest whose resident memory
 * grows at a known rate so that balloon moves can be observed and so that
 * the agent's reaction to memory pressure (and the guest OOM killer) can be
 * provoked on purpose.  Every page is written, so it is really resident.
 *
 * Usage: memhog --mib N --rate R [--hold SECONDS] [--file PATH]
 *   --mib N       MiB of anonymous memory to allocate and touch
 *   --rate R      MiB per second (0: as fast as possible)
 *   --hold S      seconds to hold the memory after touching it
 *                 (default: forever, until killed)
 *   --file PATH   write the N MiB into this file instead (in a tmpfs the
 *                 pages stay used until the file is removed, whatever
 *                 happens to memhog: the page-cache fill of the reaction
 *                 benchmark)
 *
 * Prints "memhog: touched X/N MiB" progress lines, "memhog: holding N MiB"
 * once all is resident and "memhog: done" before exiting 0.  SIGTERM and
 * SIGINT end the hold early (still exit 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double deadline)
{
	double left;

	while (!stop_requested && (left = deadline - now()) > 0) {
		struct timespec ts;

		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
			return;
	}
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s --mib N --rate R [--hold SECONDS] [--file PATH]\n",
		prog);
	exit(2);
}

static double parse_number(const char *prog, const char *opt, const char *val)
{
	char *end;
	double d;

	if (val == NULL)
		usage(prog);
	errno = 0;
	d = strtod(val, &end);
	if (errno != 0 || end == val || *end != '\0' || d < 0) {
		fprintf(stderr, "%s: bad value for %s: %s\n", prog, opt, val);
		exit(2);
	}
	return d;
}

int main(int argc, char **argv)
{
	double mib = -1, rate = -1, hold = -1;
	const char *path = NULL;
	int fd = -1;
	long page = sysconf(_SC_PAGESIZE);
	unsigned long total, done_mib, i;
	double start, last_report;
	struct sigaction sa;
	unsigned char *mem;
	int a;

	for (a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--mib") == 0)
			mib = parse_number(argv[0], argv[a], argv[a + 1]), a++;
		else if (strcmp(argv[a], "--rate") == 0)
			rate = parse_number(argv[0], argv[a], argv[a + 1]), a++;
		else if (strcmp(argv[a], "--hold") == 0)
			hold = parse_number(argv[0], argv[a], argv[a + 1]), a++;
		else if (strcmp(argv[a], "--file") == 0 && a + 1 < argc)
			path = argv[++a];
		else
			usage(argv[0]);
	}
	if (mib < 0 || rate < 0)
		usage(argv[0]);

	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	total = (unsigned long)mib;
	if (total == 0) {
		printf("memhog: holding 0 MiB\nmemhog: done\n");
		return 0;
	}
	if (path != NULL) {
		/* One MiB buffer written again and again into the file. */
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		mem = malloc(MIB);
		if (fd < 0 || mem == NULL) {
			fprintf(stderr, "memhog: %s: %s\n", path, strerror(errno));
			return 1;
		}
	} else {
		mem = mmap(NULL, total * MIB, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (mem == MAP_FAILED) {
			fprintf(stderr, "memhog: mmap %lu MiB: %s\n", total,
				strerror(errno));
			return 1;
		}
	}
	printf("memhog: allocating %lu MiB at %g MiB/s%s%s\n", total, rate,
	       path ? " into " : "", path ? path : "");

	start = last_report = now();
	for (done_mib = 0; done_mib < total && !stop_requested; done_mib++) {
		unsigned char *chunk = fd < 0 ? mem + done_mib * MIB : mem;

		/* A write per page makes it resident; vary it against KSM. */
		for (i = 0; i < MIB; i += (unsigned long)page)
			chunk[i] = (unsigned char)((done_mib + i / page) | 1);
		if (fd >= 0 && write(fd, chunk, MIB) != (ssize_t)MIB) {
			fprintf(stderr, "memhog: write %s: %s\n", path,
				strerror(errno));
			break;
		}
		if (now() - last_report >= 1.0) {
			printf("memhog: touched %lu/%lu MiB\n", done_mib + 1,
			       total);
			last_report = now();
		}
		if (rate > 0)
			sleep_until(start + (double)(done_mib + 1) / rate);
	}
	printf("memhog: touched %lu/%lu MiB\n", done_mib, total);
	printf("memhog: holding %lu MiB\n", done_mib);

	if (hold < 0) {
		while (!stop_requested)
			sleep(1);	/* a signal cuts it short */
	} else {
		sleep_until(now() + hold);
	}

	if (fd >= 0) {
		close(fd);	/* the file and its pages stay */
		free(mem);
	} else {
		munmap(mem, total * MIB);
	}
	printf("memhog: done\n");
	return 0;
}
