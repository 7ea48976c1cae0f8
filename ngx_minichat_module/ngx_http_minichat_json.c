/*
 * JSON string escaping for frames the module writes itself.  Outgoing frames
 * are built with a length pass and a copy pass into one buffer, so a message
 * is encoded once, whatever the number of recipients.  Input is valid UTF-8
 * (checked on the way in), so only quotes, backslashes and control characters
 * need escapes.
 */
#include "ngx_http_minichat_module.h"


/* What escaping adds to a byte: 1 for a two-character escape (\" \\ \b \t
 * \n \f \r), 5 for the other control characters (\u00XX), 0 for the rest.
 * One table look-up per byte instead of seven comparisons, and the escape
 * pass copies the runs that need nothing in one go. */
static const u_char  ngx_http_minichat_json_extra[256] = {
    5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1, 5, 1, 1, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    ['"'] = 1, ['\\'] = 1
};


size_t
ngx_http_minichat_json_escape_len(const u_char *s, size_t n)
{
    size_t  len = n, i;

    for (i = 0; i < n; i++) {
        len += ngx_http_minichat_json_extra[s[i]];
    }

    return len;
}


u_char *
ngx_http_minichat_json_escape(u_char *dst, const u_char *s, size_t n)
{
    static const u_char  hex[] = "0123456789abcdef";
    size_t               i, run;
    u_char               c;

    i = 0;

    for ( ;; ) {
        run = i;
        while (i < n && ngx_http_minichat_json_extra[s[i]] == 0) {
            i++;
        }
        dst = ngx_cpymem(dst, s + run, i - run);

        if (i == n) {
            return dst;
        }

        c = s[i++];
        *dst++ = '\\';

        switch (c) {
        case '"':  *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; break;
        case '\n': *dst++ = 'n'; break;
        case '\r': *dst++ = 'r'; break;
        case '\t': *dst++ = 't'; break;
        case '\b': *dst++ = 'b'; break;
        case '\f': *dst++ = 'f'; break;
        default:
            *dst++ = 'u'; *dst++ = '0'; *dst++ = '0';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0xf];
        }
    }
}


uint64_t
ngx_http_minichat_json_id(json_t *v)
{
    /* ids are JSON integers (jansson reads up to 2^63 - 1) */
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t) json_integer_value(v) : 0;
}
