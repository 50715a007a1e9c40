/* The destroyer: contexts aiotk made in a process and takes back,
 * destroyed by a thread of that process while it runs (destroyer.c says
 * how and why). This is the job it is given, at the start of its own
 * mapping: the one layout the host (destroy_later.c), the routine and a
 * later aiotk looking for leftovers share. Fixed-size fields only. */
#ifndef AIOTK_DESTROYER_H
#define AIOTK_DESTROYER_H

#include <stdint.h>

/* The mapping's first 8 bytes, once its job is written. */
#define AIOTK_DESTROYER_MAGIC 0x646e75646b746f69ull /* "iotkdund" */
/* The thread's name while it lives (/proc/PID/task/TID/comm), for
 * people and tools; aiotk knows its threads by their mappings. */
#define AIOTK_DESTROYER_NAME "aiotk-undo"

struct aiotk_djob {
	uint64_t magic;
	uint64_t self_base, self_len; /* its mapping: job, code and stack */
	/* The parking slots after it (the contexts' new addresses, ctx[]),
	 * part of the same mapping until each ring is moved onto its own. */
	uint64_t slots_len;
	/* The process's own code that unmaps and exits with no memory
	 * access between the two (arch.h), entered at its system call. */
	uint64_t exit_code;
	char name[16];
	int32_t pid;          /* the process: headers are read through it */
	/* The thread: written by the clone that makes it (CLONE_PARENT_SETTID)
	 * before it runs, so a mapping with a live tid has a live thread. */
	int32_t tid;
	uint32_t n;           /* contexts in ctx[] */
	uint32_t done;        /* out: how many were handled, from the first */
	uint32_t skipped;     /* out: of those, left alone (no longer marked) */
	uint32_t pad;
	uint64_t ctx[];
};

#endif
