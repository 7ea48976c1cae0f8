/*
 * Range checks for the module's directives: post handlers for nginx's stock
 * msec, sec and size slots (the last field of an ngx_command_t), so that a
 * value outside its range stops `nginx -t` with a message that names the
 * directive, the value given and the range, instead of a worker running on
 * a zero timeout or a queue of a few bytes.  ngx_conf_check_num_bounds does
 * the same for plain numbers; nginx has none for the other slots.
 *
 * Checks that relate two directives (the send queue against the message
 * size, the session TTL against the ping interval) stay in
 * init_main_conf, where every value is known.
 */
#include "ngx_http_minichat_module.h"


static char *ngx_http_minichat_bounds_check(ngx_conf_t *cf, ngx_http_minichat_bounds_t *b, uint64_t v);


char *
ngx_http_minichat_bounds_msec(ngx_conf_t *cf, void *post, void *data)
{
    return ngx_http_minichat_bounds_check(cf, post, *(ngx_msec_t *) data);
}


char *
ngx_http_minichat_bounds_sec(ngx_conf_t *cf, void *post, void *data)
{
    time_t  v = *(time_t *) data;

    return ngx_http_minichat_bounds_check(cf, post, v < 0 ? UINT64_MAX : (uint64_t) v);
}


char *
ngx_http_minichat_bounds_size(ngx_conf_t *cf, void *post, void *data)
{
    return ngx_http_minichat_bounds_check(cf, post, *(size_t *) data);
}


/* v must be in [low, high], or 0 when zero_ok. */
static char *
ngx_http_minichat_bounds_check(ngx_conf_t *cf, ngx_http_minichat_bounds_t *b, uint64_t v)
{
    ngx_str_t  *value;

    if ((v >= b->low && v <= b->high) || (v == 0 && b->zero_ok)) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"%V\" \"%V\": must be %s", &value[0], &value[1], b->range);

    return NGX_CONF_ERROR;
}


/* A string directive's value: 1..max bytes of printable ASCII (it is
 * compared with claims and written into error messages). */
char *
ngx_http_minichat_bounds_text(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *s = data, *value;
    ngx_uint_t  i;

    value = cf->args->elts;

    if (s->len == 0 || s->len > NGX_HTTP_MINICHAT_TEXT_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \"%V\" \"%V\": must be 1 to %d bytes", &value[0],
                           &value[1], NGX_HTTP_MINICHAT_TEXT_MAX);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < 0x20 || s->data[i] > 0x7e) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"%V\" \"%V\": must be printable ASCII", &value[0], &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}
