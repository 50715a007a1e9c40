/* The part of CRIU's plugin interface aiotk_criu.so uses, as CRIU 4.x
 * defines it (criu/include/criu-plugin.h, plugin version 0.2.0). Declared
 * here because Debian 12's packaged header is CRIU 3.17's, which lacks
 * the device hooks: CRIU looks up the symbol CR_PLUGIN_DESC, refuses a
 * descriptor whose version or hook count exceeds its own, and calls
 * hooks[i] by the numbers below. */
#ifndef AIOTK_CRIU_PLUGIN_ABI_H
#define AIOTK_CRIU_PLUGIN_ABI_H

#define CRIU_PLUGIN_VERSION ((0 << 16) + (2 << 8) + 0)

enum {
	CR_PLUGIN_HOOK__RESUME_DEVICES_LATE = 9, /* (int pid) after restore, before resume */
	CR_PLUGIN_HOOK__CHECKPOINT_DEVICES = 11, /* (int pid) frozen, before memory is dumped */
	CR_PLUGIN_HOOK__MAX = 13,
};

enum {
	CR_PLUGIN_STAGE__DUMP,
	CR_PLUGIN_STAGE__PRE_DUMP,
	CR_PLUGIN_STAGE__RESTORE,
};

typedef struct {
	const char *name;
	int (*init)(int stage);
	void (*exit)(int stage, int ret);
	unsigned int version;
	unsigned int max_hooks;
	void *hooks[CR_PLUGIN_HOOK__MAX];
} cr_plugin_desc_t;

/* Exported by the criu binary. */
extern int criu_get_image_dir(void) __attribute__((weak));
extern void print_on_level(unsigned int loglevel, const char *format, ...)
	__attribute__((weak, format(printf, 2, 3)));

/* CRIU's log levels (criu/include/log.h). */
#define CRIU_LOG_ERROR 1
#define CRIU_LOG_WARN 2
#define CRIU_LOG_INFO 3
#define CRIU_LOG_DEBUG 4

#endif
