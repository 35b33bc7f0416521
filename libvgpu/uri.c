/* SPDX-License-Identifier: MIT */
/* uri.c - device URI parsing. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "uri.h"

static vgpu_status bad(const char *s, const char *why)
{
	return vgpu__error(VGPU_ERR_BAD_URI, "bad URI '%.200s': %s", s, why);
}

static int all_digits(const char *p, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)p[i]))
			return 0;
	return 1;
}

static vgpu_status parse_index(const char *s, const char *p, size_t n, int *out)
{
	long v;

	if (n == 0) {
		*out = 0;
		return VGPU_OK;
	}
	if (!all_digits(p, n) || n > 6)
		return bad(s, "device index must be a small non-negative number");
	v = strtol(p, NULL, 10);
	*out = (int)v;
	return VGPU_OK;
}

static vgpu_status parse_query(const char *s, const char *q, struct vgpu_uri *u)
{
	while (*q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', len);
		struct vgpu_uri_param *p;
		size_t klen, vlen;

		if (len == 0) {
			q += amp ? 1 : 0;
			if (!amp)
				break;
			continue;
		}
		if (u->nparams >= VGPU_URI_MAX_PARAMS)
			return bad(s, "too many query parameters");
		klen = eq ? (size_t)(eq - q) : len;
		vlen = eq ? len - klen - 1 : 0;
		if (klen == 0)
			return bad(s, "empty parameter name");
		if (klen >= sizeof(p->key))
			return bad(s, "parameter name too long");
		if (vlen >= sizeof(p->value))
			return bad(s, "parameter value too long");
		p = &u->params[u->nparams++];
		memcpy(p->key, q, klen);
		p->key[klen] = '\0';
		if (eq)
			memcpy(p->value, eq + 1, vlen);
		p->value[vlen] = '\0';
		q += len + (amp ? 1 : 0);
	}
	return VGPU_OK;
}

vgpu_status vgpu__uri_parse(const char *s, struct vgpu_uri *u)
{
	const char *colon, *rest, *query, *end;
	size_t slen;
	vgpu_status st;

	memset(u, 0, sizeof(*u));
	u->port = -1;
	if (!s || !*s)
		return bad("", "empty");
	slen = strlen(s);
	if (slen >= VGPU_URI_MAX)
		return bad(s, "too long");
	for (size_t i = 0; i < slen; i++)
		if ((unsigned char)s[i] <= ' ')
			return bad(s, "contains white space or control characters");
	colon = strchr(s, ':');
	if (!colon && strlen(s) < sizeof(u->scheme) && !strchr(s, '/') && !strchr(s, '?')) {
		/* a bare scheme: "cpu" is "cpu:0" */
		for (const char *c = s; *c; c++)
			if (!isalnum((unsigned char)*c))
				return bad(s, "expected SCHEME:INDEX or SCHEME://HOST:PORT/INDEX");
		for (size_t i = 0; s[i]; i++)
			u->scheme[i] = (char)tolower((unsigned char)s[i]);
		return VGPU_OK;
	}
	if (!colon || colon == s)
		return bad(s, "expected SCHEME:INDEX or SCHEME://HOST:PORT/INDEX");
	if ((size_t)(colon - s) >= sizeof(u->scheme))
		return bad(s, "scheme too long");
	for (const char *c = s; c < colon; c++)
		if (!isalnum((unsigned char)*c) && *c != '+' && *c != '-')
			return bad(s, "bad character in scheme");
	memcpy(u->scheme, s, (size_t)(colon - s));
	for (char *c = u->scheme; *c; c++)
		*c = (char)tolower((unsigned char)*c);

	rest = colon + 1;
	query = strchr(rest, '?');
	end = query ? query : s + slen;
	if (query && (st = parse_query(s, query + 1, u)) != VGPU_OK)
		return st;

	if (strncmp(rest, "//", 2) != 0) {
		/* local: "cpu:0" */
		return parse_index(s, rest, (size_t)(end - rest), &u->device);
	}
	rest += 2;
	if (!strcmp(u->scheme, "unix")) {
		/* unix:///path/to.sock[/N] */
		const char *slash;
		size_t plen;

		if (*rest != '/')
			return bad(s, "unix socket path must be absolute (unix:///path/to.sock/0)");
		slash = end;
		while (slash > rest && slash[-1] != '/')
			slash--;
		if (all_digits(slash, (size_t)(end - slash)) && slash - 1 > rest) {
			st = parse_index(s, slash, (size_t)(end - slash), &u->device);
			if (st)
				return st;
			plen = (size_t)(slash - 1 - rest);
		} else {
			plen = (size_t)(end - rest);
		}
		if (plen >= 108) /* sun_path */
			return bad(s, "unix socket path too long (max 107 bytes)");
		memcpy(u->path, rest, plen);
		u->path[plen] = '\0';
		return VGPU_OK;
	}

	/* host:port[/N] */
	{
		const char *hs = rest, *he, *ps = NULL, *slash;
		size_t hlen;

		slash = memchr(rest, '/', (size_t)(end - rest));
		if (!slash)
			slash = end;
		if (*hs == '[') {
			he = memchr(hs, ']', (size_t)(slash - hs));
			if (!he)
				return bad(s, "unterminated [IPv6] address");
			hs++;
			if (he + 1 < slash) {
				if (he[1] != ':')
					return bad(s, "expected ':' after ]");
				ps = he + 2;
			}
		} else {
			he = memchr(hs, ':', (size_t)(slash - hs));
			if (he)
				ps = he + 1;
			else
				he = slash;
		}
		hlen = (size_t)(he - hs);
		if (hlen == 0)
			return bad(s, "missing host");
		if (hlen >= sizeof(u->host))
			return bad(s, "host name too long");
		memcpy(u->host, hs, hlen);
		u->host[hlen] = '\0';
		if (ps) {
			size_t plen = (size_t)(slash - ps);
			long port;

			if (!all_digits(ps, plen) || plen > 5)
				return bad(s, "port must be a number 0-65535");
			port = strtol(ps, NULL, 10);
			if (port > 65535)
				return bad(s, "port must be a number 0-65535");
			u->port = (int)port;
		}
		if (slash < end)
			return parse_index(s, slash + 1, (size_t)(end - slash - 1), &u->device);
		u->device = 0;
	}
	return VGPU_OK;
}

const char *vgpu__uri_get(const struct vgpu_uri *u, const char *key)
{
	for (int i = u->nparams - 1; i >= 0; i--)
		if (!strcmp(u->params[i].key, key))
			return u->params[i].value;
	return NULL;
}

vgpu_status vgpu__parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || !isdigit((unsigned char)*s))
		return VGPU_ERR_INVALID;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return VGPU_ERR_INVALID;
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'K': mul = 1ull << 10; break;
		case 'M': mul = 1ull << 20; break;
		case 'G': mul = 1ull << 30; break;
		case 'T': mul = 1ull << 40; break;
		default: return VGPU_ERR_INVALID;
		}
		end++;
		if (!strcasecmp(end, "iB") || !strcasecmp(end, "B"))
			end += strlen(end);
		if (*end)
			return VGPU_ERR_INVALID;
	}
	if (v > UINT64_MAX / mul)
		return VGPU_ERR_INVALID;
	*out = v * mul;
	return VGPU_OK;
}

vgpu_status vgpu__uri_get_size(const struct vgpu_uri *u, const char *key, uint64_t def,
			       uint64_t *out)
{
	const char *v = vgpu__uri_get(u, key);

	if (!v) {
		*out = def;
		return VGPU_OK;
	}
	if (vgpu__parse_size(v, out) != VGPU_OK)
		return vgpu__error(VGPU_ERR_BAD_URI,
				   "bad URI parameter %s=%s: expected a size like 4096, 256M or 4G",
				   key, v);
	return VGPU_OK;
}

void vgpu__uri_format(const struct vgpu_uri *u, char *buf, size_t len)
{
	size_t n;

	if (u->path[0])
		n = (size_t)snprintf(buf, len, "%s://%s/%d", u->scheme, u->path, u->device);
	else if (u->host[0]) {
		const char *fmt = strchr(u->host, ':') ? "%s://[%s]" : "%s://%s";

		n = (size_t)snprintf(buf, len, fmt, u->scheme, u->host);
		if (u->port >= 0 && n < len)
			n += (size_t)snprintf(buf + n, len - n, ":%d", u->port);
		if (n < len)
			n += (size_t)snprintf(buf + n, len - n, "/%d", u->device);
	} else
		n = (size_t)snprintf(buf, len, "%s:%d", u->scheme, u->device);
	for (int i = 0; i < u->nparams && n < len; i++) {
		if (!strcmp(u->params[i].key, "token"))
			continue;
		n += (size_t)snprintf(buf + n, len - n, "%c%s=%s", n && strchr(buf, '?') ? '&' : '?',
				      u->params[i].key, u->params[i].value);
	}
}
