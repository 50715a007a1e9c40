/* Provided-buffer rings made again, with their heads.
 *
 * A ring in the program's memory (io_uring_setup_buf_ring,
 * io_uring_register_buf_ring) is registered again with its group, its
 * entries and at its address: the memory, its entries and the tail the
 * program wrote are the program's, left as they are. A ring in the
 * kernel's memory (IOU_PBUF_RING_MMAP) is registered so again, placed at
 * the program's saved mapping of it with the instance's other mappings
 * (rebuild.c, place.c), and its saved bytes written back. The kernel's head
 * has no interface to set it and starts at 0, so it is moved as the
 * program moved it, one buffer at a time: reads of /dev/null (opened in
 * the process for them, journalled, closed after) selecting a buffer of
 * the group, each of which takes one and reads nothing into it (not an
 * empty memfd: its reads go to io-wq, whose worker thread is stopped with
 * the process once it exists). They are the new instance's first SQEs,
 * each with its CQE, reaped: the counters are driven on from there
 * (counters.c). Then the kernel is
 * asked for the head (IORING_REGISTER_PBUF_STATUS) and it must be the
 * saved one. A ring goes with its instance: nothing of it to undo.
 * docs/KERNEL-FACTS.md, "io_uring: buffer rings rebuilt". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef IORING_REGISTER_PBUF_STATUS
#define IORING_REGISTER_PBUF_STATUS 26 /* Linux 6.8 */
#endif
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#define PBUF_RING_MMAP 1              /* IOU_PBUF_RING_MMAP */
#define OFF_PBUF_RING 0x80000000ull   /* IORING_OFF_PBUF_RING, bgid << 16 above it */
/* /dev/null opened with flags no program would pass together, so that a
 * rollback knows it (O_SYNC, O_APPEND and O_NOATIME change nothing for
 * its reads). */
#define NULL_PATH "/dev/null"
#define NULL_FLAGS (O_RDONLY | O_APPEND | O_SYNC | O_NOATIME | O_CLOEXEC)
#define KERNEL_O_LARGEFILE 0100000 /* fdinfo shows it; glibc's O_LARGEFILE is 0 on x86_64 */
#define READ_DATA 0x6b746f6962756672ull /* reaped at once, never seen */

struct buf_status {             /* struct io_uring_buf_status */
	uint32_t buf_group, head, resv[8];
};
struct buf_reg {                /* struct io_uring_buf_reg as Linux 6.9 has it (flags) */
	uint64_t ring_addr;
	uint32_t ring_entries;
	uint16_t bgid, flags;
	uint64_t resv[3];
};

/* The program's mapping of group bgid's ring in the kernel's memory, if
 * saved. */
static const aiotk_uring_map *ring_map(const aiotk_uring *u, uint16_t bgid)
{
	for (size_t i = 0; i < u->nmaps; i++)
		if (u->maps[i].offset == (OFF_PBUF_RING | (uint64_t)bgid << 16) && u->maps[i].data)
			return &u->maps[i];
	return NULL;
}

int uring_bufring_mapping(const aiotk_uring *u, uint64_t offset)
{
	for (size_t i = 0; i < u->nbls; i++)
		if ((u->bls[i].flags & (AIOTK_URING_BL_RING | AIOTK_URING_BL_USER)) == AIOTK_URING_BL_RING &&
		    offset == (OFF_PBUF_RING | (uint64_t)u->bls[i].bgid << 16))
			return 1;
	return 0;
}

/* Where group b's ring is in the program's memory now. */
static uint64_t ring_at(const aiotk_uring *u, const aiotk_uring_bl *b)
{
	const aiotk_uring_map *m = b->flags & AIOTK_URING_BL_USER ? NULL : ring_map(u, b->bgid);
	return m ? m->start : b->addr;
}

/* Each group's own reasons; the instance's (groups not all read) are
 * uring_bufrings_unrebuilt's. */
const char *aiotk_uring_bl_unrebuilt(const aiotk_uring *u, size_t i)
{
	const aiotk_uring_bl *b = &u->bls[i];
	const char *w = NULL;
	if (!(b->flags & AIOTK_URING_BL_RING))
		w = "legacy provided buffers (IORING_OP_PROVIDE_BUFFERS) are not rebuilt: the "
		    "kernel's list of them is not read";
	else if (!(b->flags & AIOTK_URING_BL_USER) && !ring_map(u, b->bgid))
		w = "its buffer ring in the kernel's memory (IOU_PBUF_RING_MMAP) is not mapped by "
		    "the program, so its entries are not saved";
	else if ((b->flags & AIOTK_URING_BL_USER) && !b->addr)
		w = "its buffer ring was not found in the program's memory (its mapping moved "
		    "since it was registered?)";
	else if ((b->flags & AIOTK_URING_BL_INC) && b->head)
		w = "the head of an incremental buffer ring (IOU_PBUF_RING_INC) is not set back";
	else if ((uint16_t)(b->tail - b->head) > b->entries)
		w = "its buffer ring's tail is more than its entries past its head";
	else if (b->tail < b->head)
		w = "its buffer ring's counters wrapped past 65535 (the head, moved from 0 one "
		    "buffer at a time, would meet the tail)";
	return w;
}

const char *uring_bufrings_unrebuilt(const aiotk_uring *u, char *why, size_t len)
{
	if (!u->nbls_total)
		return NULL;
	if (!(u->have & AIOTK_URING_HAVE_BLS) || u->nbls < u->nbls_total)
		return "its provided-buffer groups were not all read";
	for (size_t i = 0; i < u->nbls; i++) {
		const aiotk_uring_bl *b = &u->bls[i];
		const char *w = aiotk_uring_bl_unrebuilt(u, i);
		if (w) {
			snprintf(why, len, "provided-buffer group %u: %s", b->bgid, w);
			return why;
		}
	}
	return NULL;
}

uint64_t uring_bufring_heads(const aiotk_uring *u)
{
	uint64_t n = 0;
	for (size_t i = 0; i < u->nbls; i++)
		n += u->bls[i].head;
	return n;
}

int uring_register_bufrings(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < u->nbls; i++) {
		const aiotk_uring_bl *b = &u->bls[i];
		int user = b->flags & AIOTK_URING_BL_USER;
		struct buf_reg reg = { .ring_addr = user ? b->addr : 0, .ring_entries = b->entries,
				       .bgid = b->bgid };
		reg.flags = (uint16_t)((b->flags & AIOTK_URING_BL_INC ? IOU_PBUF_RING_INC : 0) |
				       (user ? 0 : PBUF_RING_MMAP));
		rc = aiotk_poke(n->t, URING_SCRATCH(n->j_at), &reg, sizeof(reg), err);
		long r = rc ? 0 : aiotk_sys_in(n->t, n->owner, SYS_io_uring_register, n->fd,
					       IORING_REGISTER_PBUF_RING, (long)URING_SCRATCH(n->j_at), 1, 0, 0);
		if (!rc && aiotk_sys_failed(r))
			rc = aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: registering buffer ring "
					"group %u again (%u entries %s 0x%llx): %s", u->fd, b->bgid, b->entries,
					user ? "at" : "in the kernel's memory, mapped at",
					(unsigned long long)ring_at(u, b), strerror((int)-r));
	}
	return rc;
}

/* A ring in the kernel's memory, placed at its saved address with the
 * other mappings: its saved entries and tail written back (the reads
 * select from them). Then each ring's tail as the program's memory holds
 * it now: a head moved from 0 to its saved value must not meet it on the
 * way. */
static int tails_ahead(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	for (size_t i = 0; i < u->nbls; i++) {
		const aiotk_uring_bl *b = &u->bls[i];
		const aiotk_uring_map *m = b->flags & AIOTK_URING_BL_USER ? NULL : ring_map(u, b->bgid);
		uint16_t tail;
		int rc = m ? aiotk_poke(n->t, m->start, m->data, m->end - m->start, err) : 0;
		if (!rc && b->head)
			rc = aiotk_peek(n->t, ring_at(u, b) + 14, &tail, sizeof(tail), err);
		if (rc)
			return rc;
		if (b->head && tail < b->head)
			return aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0, "io_uring fd %d: buffer ring group %u's "
					  "tail is %u in the program's memory now, behind its saved head %u",
					  u->fd, b->bgid, tail, b->head);
	}
	return 0;
}

/* The /dev/null the reads read, journalled before it is opened. */
static int open_null(uring_new *n, int *fd, aiotk_err *err)
{
	int rc = aiotk_poke(n->t, URING_SCRATCH(n->j_at), NULL_PATH, sizeof(NULL_PATH), err);
	if (!rc)
		rc = uring_journal_nullfd(n, 1, err);
	long r = rc ? 0 : aiotk_sys(n->t, SYS_openat, AT_FDCWD, (long)URING_SCRATCH(n->j_at), NULL_FLAGS,
				    0, 0, 0);
	if (!rc && aiotk_sys_failed(r))
		rc = aiotk_fail(err, AIOTK_ESYS, (int)-r, "opening %s in process %d (the reads that move a "
				"buffer ring's head read it): %s", NULL_PATH, n->t->pid, strerror((int)-r));
	*fd = rc ? -1 : (int)r;
	return rc;
}

static void read_sqe(struct io_uring_sqe *s, int fd, uint16_t bgid)
{
	memset(s, 0, sizeof(*s));
	s->opcode = IORING_OP_READ;
	s->fd = fd;
	s->flags = IOSQE_BUFFER_SELECT;
	s->buf_group = bgid;
	s->user_data = READ_DATA;
}

/* k reads of group bgid from the kernel's head *done, submitted and
 * reaped: each must have completed, taking a buffer. */
static int reads(uring_new *n, const aiotk_uring *u, int fd, uint16_t bgid, uint32_t k,
		 uint64_t *done, aiotk_err *err)
{
	uint32_t mask = u->sq_entries - 1, at = (uint32_t)*done, tail = at + k;
	int rc = 0;
	for (uint32_t i = 0; !rc && i < k; i++) {
		struct io_uring_sqe s;
		uint32_t slot = (at + i) & mask;
		read_sqe(&s, fd, bgid);
		rc = aiotk_poke(n->t, n->sqes + slot * sizeof(s), &s, sizeof(s), err);
		if (!rc)
			rc = aiotk_poke(n->t, n->sq_ring + n->p.sq_off.array + slot * 4, &slot, 4, err);
	}
	if (!rc)
		rc = aiotk_poke(n->t, n->sq_ring + n->p.sq_off.tail, &tail, 4, err);
	/* Not waited for: /dev/null's reads complete inline, so their CQEs
	 * are posted by the submitting call (a read gone elsewhere is a
	 * failure named below, never a wait in the stopped process). */
	long r = rc ? 0 : aiotk_sys_in(n->t, n->owner, SYS_io_uring_enter, n->fd, k, 0, 0, 0, 0);
	if (!rc && (aiotk_sys_failed(r) || (uint32_t)r != k))
		return aiotk_fail(err, AIOTK_ESYS, aiotk_sys_failed(r) ? (int)-r : EIO, "io_uring fd %d: "
				  "reads to move buffer ring group %u's head: io_uring_enter took %ld of %u",
				  u->fd, bgid, r, k);
	uint32_t got = 0;
	if (!rc)
		rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.tail, &got, 4, err);
	if (!rc && got != tail)
		return aiotk_fail(err, AIOTK_ESTUCK, 0, "io_uring fd %d: %u of the %u reads moving buffer "
				  "ring group %u's head completed", u->fd, got - at, k, bgid);
	for (uint32_t i = 0; !rc && i < k; i++) {
		struct io_uring_cqe c;
		uint32_t slot = (at + i) & (n->p.cq_entries - 1);
		rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.cqes + slot * sizeof(c), &c, sizeof(c), err);
		if (!rc && (c.res < 0 || !(c.flags & IORING_CQE_F_BUFFER)))
			rc = aiotk_fail(err, AIOTK_ESYS, c.res < 0 ? -c.res : ENOBUFS, "io_uring fd %d: a read "
					"moving buffer ring group %u's head took no buffer: %s", u->fd, bgid,
					strerror(c.res < 0 ? -c.res : ENOBUFS));
	}
	if (!rc)
		rc = aiotk_poke(n->t, n->cq_ring + n->p.cq_off.head, &tail, 4, err);
	if (!rc)
		*done = tail;
	return rc;
}

/* The kernel's head of group b, as it says it is. */
static int head_is(uring_new *n, const aiotk_uring *u, const aiotk_uring_bl *b, aiotk_err *err)
{
	struct buf_status st = { .buf_group = b->bgid };
	int rc = aiotk_poke(n->t, URING_SCRATCH(n->j_at), &st, sizeof(st), err);
	long r = rc ? 0 : aiotk_sys_in(n->t, n->owner, SYS_io_uring_register, n->fd,
				       IORING_REGISTER_PBUF_STATUS, (long)URING_SCRATCH(n->j_at), 1, 0, 0);
	if (!rc && aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: IORING_REGISTER_PBUF_STATUS of "
				  "group %u: %s", u->fd, b->bgid, strerror((int)-r));
	if (!rc)
		rc = aiotk_peek(n->t, URING_SCRATCH(n->j_at), &st, sizeof(st), err);
	if (!rc && st.head != b->head)
		rc = aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0, "io_uring fd %d: buffer ring group %u's head is "
				"%u after the reads, not its saved %u", u->fd, b->bgid, st.head, b->head);
	return rc;
}

int uring_move_bufring_heads(uring_new *n, const aiotk_uring *u, uint64_t *done, aiotk_err *err)
{
	*done = 0;
	if (!uring_bufring_heads(u))
		return 0;
	int fd = -1, rc = tails_ahead(n, u, err);
	if (!rc)
		rc = open_null(n, &fd, err);
	for (size_t i = 0; !rc && i < u->nbls; i++) {
		const aiotk_uring_bl *b = &u->bls[i];
		for (uint32_t left = b->head; !rc && left;) {
			uint32_t k = left < u->sq_entries ? left : u->sq_entries;
			rc = reads(n, u, fd, b->bgid, k, done, err);
			left -= rc ? 0 : k;
		}
		if (!rc)
			rc = head_is(n, u, b, err);
	}
	if (fd >= 0 && !rc) {
		aiotk_sys(n->t, SYS_close, fd, 0, 0, 0, 0, 0);
		rc = uring_journal_nullfd(n, 0, err);
	}
	return rc;
}

/* The /dev/null a rebuild opened, closed if it is still at the
 * journalled fd: /dev/null there with the rebuild's flags; a close that
 * fails goes into m. */
void uring_close_nullfd(aiotk_target *t, const uring_journal *j, uring_missed *m)
{
	char path[64], link[64] = "", info[256] = "";
	if (j->nullfd < 0)
		return;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", t->pid, j->nullfd);
	ssize_t len = readlink(path, link, sizeof(link) - 1);
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", t->pid, j->nullfd);
	FILE *f = fopen(path, "r");
	unsigned long flags = 0;
	int got = 0;
	while (f && !got && fgets(info, sizeof(info), f))
		got = sscanf(info, "flags: %lo", &flags) == 1;
	if (f)
		fclose(f);
	if (len > 0 && !strcmp(link, NULL_PATH) && got && (flags & ~(unsigned long)KERNEL_O_LARGEFILE) == NULL_FLAGS)
		uring_sys_missed(m, aiotk_sys(t, SYS_close, j->nullfd, 0, 0, 0, 0, 0),
				 "the /dev/null a rebuild opened, not closed: fd", (uint64_t)j->nullfd);
}
