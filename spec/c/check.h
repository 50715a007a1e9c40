/* A tiny assertion harness for the C tests: every CHECK counts, failures
 * say where and why, and main ends with "N passed, N failed". */
#ifndef AIOTK_CHECK_H
#define AIOTK_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (cond) {                                                 \
			check_passed++;                                     \
		} else {                                                    \
			check_failed++;                                     \
			fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__,     \
				__LINE__, #cond);                           \
			fprintf(stderr, __VA_ARGS__);                       \
			fputc('\n', stderr);                                \
		}                                                           \
	} while (0)

#define CHECK_OK(rc, err) CHECK((rc) == 0, "rc %d: %s", (rc), (err).msg)

static inline int check_report(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
