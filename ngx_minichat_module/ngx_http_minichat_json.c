/*
 * JSON string escaping for frames the module writes itself.  Outgoing frames
 * are built with a length pass and a copy pass into one buffer, so a message
 * is encoded once, whatever the number of recipients.  Input is valid UTF-8
 * (checked on the way in), so only quotes, backslashes and control characters
 * need escapes.
 */
#include "ngx_http_minichat_module.h"


size_t
ngx_http_minichat_json_escape_len(const u_char *s, size_t n)
{
    size_t  len = n, i;

    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'
            || s[i] == '\b' || s[i] == '\f')
        {
            len += 1;

        } else if (s[i] < 0x20) {
            len += 5;
        }
    }

    return len;
}


u_char *
ngx_http_minichat_json_escape(u_char *dst, const u_char *s, size_t n)
{
    static const u_char  hex[] = "0123456789abcdef";
    size_t               i;

    for (i = 0; i < n; i++) {
        switch (s[i]) {
        case '"':  *dst++ = '\\'; *dst++ = '"'; break;
        case '\\': *dst++ = '\\'; *dst++ = '\\'; break;
        case '\n': *dst++ = '\\'; *dst++ = 'n'; break;
        case '\r': *dst++ = '\\'; *dst++ = 'r'; break;
        case '\t': *dst++ = '\\'; *dst++ = 't'; break;
        case '\b': *dst++ = '\\'; *dst++ = 'b'; break;
        case '\f': *dst++ = '\\'; *dst++ = 'f'; break;
        default:
            if (s[i] < 0x20) {
                *dst++ = '\\'; *dst++ = 'u'; *dst++ = '0'; *dst++ = '0';
                *dst++ = hex[s[i] >> 4];
                *dst++ = hex[s[i] & 0xf];
            } else {
                *dst++ = s[i];
            }
        }
    }

    return dst;
}


uint64_t
ngx_http_minichat_json_id(json_t *v)
{
    /* ids are JSON integers (jansson reads up to 2^63 - 1) */
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t) json_integer_value(v) : 0;
}
