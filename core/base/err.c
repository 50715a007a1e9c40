/* Error values: a code, the errno behind it and a sentence for the user. */
#include "aiotk.h"

#include <stdarg.h>
#include <stdio.h>

const char *aiotk_code_name(int code)
{
	switch (code) {
	case AIOTK_OK: return "ok";
	case AIOTK_EINVAL: return "invalid";
	case AIOTK_ESYS: return "system";
	case AIOTK_EIMAGE: return "image";
	case AIOTK_EBUDGET: return "budget";
	case AIOTK_EIMPOSSIBLE: return "impossible";
	case AIOTK_EOCCUPIED: return "occupied";
	case AIOTK_ESTUCK: return "stuck";
	case AIOTK_ENOMEM: return "nomem";
	case AIOTK_ENOTRING: return "notring";
	case AIOTK_EUNSUPPORTED: return "unsupported";
	case AIOTK_EEMPTY: return "empty";
	case AIOTK_EROLLBACK: return "rollback";
	}
	return "unknown";
}

int aiotk_fail(aiotk_err *err, int code, int errno_, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		err->code = code;
		err->errno_ = errno_;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}
