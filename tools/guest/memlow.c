/*
 * memlow: the lowest MemAvailable a test guest reaches, sampled often.
 *
 * The reaction benchmark must know how close a guest came to running out of
 * memory, not only whether something was OOM-killed; a look over the serial
 * console every now and then misses the bottom of a fast ramp.  memlow reads
 * /proc/meminfo every --every seconds (default 0.05) and prints a line
 * "memlow: N kB" each time MemAvailable reaches a new low, so the last line
 * of its output is the lowest seen.  It makes itself exempt from the OOM
 * killer (it runs as root in the guest), so it sees the bottom whatever else
 * the guest's kernel kills.
 *
 * Usage: memlow [--every SECONDS]   (runs until killed)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long mem_available_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	double every = 0.05;
	long lowest = -1;
	struct timespec pause;
	FILE *adj;

	if (argc == 3 && strcmp(argv[1], "--every") == 0)
		every = atof(argv[2]);
	else if (argc != 1) {
		fprintf(stderr, "usage: %s [--every SECONDS]\n", argv[0]);
		return 2;
	}
	if (every <= 0)
		every = 0.05;
	adj = fopen("/proc/self/oom_score_adj", "w");
	if (adj != NULL) {
		fputs("-1000\n", adj);
		fclose(adj);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	pause.tv_sec = (time_t)every;
	pause.tv_nsec = (long)((every - (double)pause.tv_sec) * 1e9);
	for (;;) {
		long kb = mem_available_kb();

		if (kb >= 0 && (lowest < 0 || kb < lowest)) {
			lowest = kb;
			printf("memlow: %ld kB\n", kb);
		}
		nanosleep(&pause, NULL);
	}
}
