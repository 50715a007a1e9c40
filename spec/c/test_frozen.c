/* The frozen target (core/target/target_frozen.c), what a dump inside
 * CRIU reads through: a child's memory is read, and a write is refused
 * with its reason, the child's memory unchanged (a write used to go
 * through, and would have gone into CRIU's dump unnoticed). */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char pattern[64] = "frozen: read, never written";

/* The child waits for a byte, then says whether its memory is as it was. */
static int child(int in)
{
	char go;
	if (read(in, &go, 1) != 1)
		return 2;
	return strcmp(pattern, "frozen: read, never written") ? 1 : 0;
}

int main(void)
{
	int p[2];
	if (pipe(p))
		return 2;
	pid_t pid = fork();
	if (pid == 0) {
		close(p[1]);
		_exit(child(p[0]));
	}
	close(p[0]);
	aiotk_target t;
	aiotk_err err;
	char got[sizeof(pattern)];
	uint64_t at = (uint64_t)(uintptr_t)pattern;
	CHECK_OK(aiotk_target_frozen(&t, pid, &err), err);
	CHECK_OK(aiotk_peek(&t, at, got, sizeof(got), &err), err);
	CHECK(!memcmp(got, pattern, sizeof(got)), "read: '%.*s'", (int)sizeof(got), got);
	const char other[] = "changed";
	int rc = aiotk_poke(&t, at, other, sizeof(other), &err);
	CHECK(rc == AIOTK_EINVAL && err.errno_ == EPERM, "write: rc %d errno %d", rc, rc ? err.errno_ : 0);
	CHECK(rc && strstr(err.msg, "refused to write") && strstr(err.msg, "aiotk_target_attach"),
	      "message: %s", rc ? err.msg : "(written)");
	int st = 0;
	CHECK(write(p[1], "", 1) == 1, "child told");
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child's memory unchanged: status 0x%x", st);
	aiotk_target_free(&t);
	return check_report();
}
