/* The kernel-view viewer both views share (internal): the loaded (or
 * pinned) BPF programs behind an aiotk_kviewer, and the iterator links
 * each view makes from them. core/kview/viewer.c. */
#ifndef AIOTK_KVIEW_H
#define AIOTK_KVIEW_H

#include "base/base.h"

/* The viewer's programs: kview.bpf.c's (AIO contexts, iter/task) and
 * uring_view.bpf.c's (io_uring instances, iter/task_file). */
enum kviewer_prog { KVIEWER_AIO, KVIEWER_URING };

struct kview_bpf;
struct aiotk_kviewer {
	struct kview_bpf *skel; /* loaded by this viewer; NULL: from a pin */
	int prog[2];            /* enum kviewer_prog's programs (fds of its own) */
	int firsts;             /* the AIO program's `firsts` map */
	aiotk_kviewer_info info;
	/* The AIO iterator bound to one thread, made before its process is
	 * stopped (aiotk_kview_prepare) and reused by every read of it; -1:
	 * none. */
	int link, link_tid;
	/* This thread's entry in `firsts` as last written (reader: its
	 * global tid, 0 until a read told it; reader_first 0: no entry). */
	uint32_t reader, reader_first;
};

/* A new iterator link of program p on one thread (by_pid 0: tid) or one
 * process (by_pid 1); its fd, or -1 with errno set. close() ends it. */
int kviewer_link(aiotk_kviewer *v, enum kviewer_prog p, int id, int by_pid);

/* The AIO program's table slot to start from, for reader (the reading
 * thread's global tid, as the program's end record gives it): 0 removes
 * the entry (no entry reads from slot 0). -errno on failure. */
int kviewer_set_first(aiotk_kviewer *v, uint32_t reader, uint32_t first);

#endif
