// header-sanity: a fast check of the header section against RFC 5322, in C.
//
// At DATA it reads the message's headers (and the raw header block for 8-bit bytes) and
// scores what real mail software gets right and bulk senders often do not:
//
//   HS_MISSING_FROM       no From field                                   2.0
//   HS_MULTIPLE_FROM      more than one From field                        2.0
//   HS_FROM_NO_ADDRESS    a From field without a usable address           2.5
//   HS_MISSING_DATE       no Date field                                   1.0
//   HS_DATE_UNPARSEABLE   a Date field nobody can read                    1.0
//   HS_DATE_FUTURE        dated more than a day ahead                     1.5
//   HS_DATE_PAST          dated more than max_age_days ago (365)          0.5
//   HS_MISSING_MID        no Message-ID field                             0.5
//   HS_MID_MALFORMED      a Message-ID that is not left@right             1.0
//   HS_MISSING_SUBJECT    no Subject field                                0.3
//   HS_SUBJ_ALL_CAPS      a subject of 12+ letters, all capitals          1.0
//   HS_DUPLICATE_SINGLE   Date, Subject, Message-ID or To more than once  1.0
//   HS_8BIT_HEADER        raw 8-bit bytes in the header section           1.0
//   HS_TOO_MANY_HEADERS   more than max_headers fields (100)              1.5
//
// Configuration: `score.NAME` (a symbol's score; 0 turns it off), `max_headers`,
// `max_age_days`. It needs no WASI: only libc's string and number functions (no stdio,
// whose buffers would pull in file descriptors).

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy.h"

typedef struct {
    const char *name;
    double score;
} rule_t;

enum {
    MISSING_FROM,
    MULTIPLE_FROM,
    FROM_NO_ADDRESS,
    MISSING_DATE,
    DATE_UNPARSEABLE,
    DATE_FUTURE,
    DATE_PAST,
    MISSING_MID,
    MID_MALFORMED,
    MISSING_SUBJECT,
    SUBJ_ALL_CAPS,
    DUPLICATE_SINGLE,
    EIGHT_BIT_HEADER,
    TOO_MANY_HEADERS,
    RULES
};

static rule_t rules[RULES] = {
    [MISSING_FROM] = {"HS_MISSING_FROM", 2.0},
    [MULTIPLE_FROM] = {"HS_MULTIPLE_FROM", 2.0},
    [FROM_NO_ADDRESS] = {"HS_FROM_NO_ADDRESS", 2.5},
    [MISSING_DATE] = {"HS_MISSING_DATE", 1.0},
    [DATE_UNPARSEABLE] = {"HS_DATE_UNPARSEABLE", 1.0},
    [DATE_FUTURE] = {"HS_DATE_FUTURE", 1.5},
    [DATE_PAST] = {"HS_DATE_PAST", 0.5},
    [MISSING_MID] = {"HS_MISSING_MID", 0.5},
    [MID_MALFORMED] = {"HS_MID_MALFORMED", 1.0},
    [MISSING_SUBJECT] = {"HS_MISSING_SUBJECT", 0.3},
    [SUBJ_ALL_CAPS] = {"HS_SUBJ_ALL_CAPS", 1.0},
    [DUPLICATE_SINGLE] = {"HS_DUPLICATE_SINGLE", 1.0},
    [EIGHT_BIT_HEADER] = {"HS_8BIT_HEADER", 1.0},
    [TOO_MANY_HEADERS] = {"HS_TOO_MANY_HEADERS", 1.5},
};

static long max_headers = 100;
static long max_age_days = 365;

// A host string as a NUL-terminated copy (callers free it).
static char *cstr(const policy_string_t *s) {
    char *out = malloc(s->len + 1);
    if (out == NULL) abort();
    memcpy(out, s->ptr, s->len);
    out[s->len] = '\0';
    return out;
}

static bool equals(const policy_string_t *s, const char *text) {
    size_t n = strlen(text);
    return s->len == n && strncasecmp((const char *)s->ptr, text, n) == 0;
}

static void log_line(sluice_policy_host_log_level_t level, const char *message) {
    policy_string_t text;
    policy_string_set(&text, message);
    policy_list_tuple2_string_string_t fields = {NULL, 0};
    sluice_policy_host_log(level, &text, &fields);
}

// Whole decimal number in [min, max], or false.
static bool parse_long(const char *text, long min, long max, long *out) {
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < min || value > max) return false;
    *out = value;
    return true;
}

// Append `text` to the NUL-terminated `buffer` of `size` bytes, as far as it fits.
static void append(char *buffer, size_t size, const char *text) {
    size_t used = strlen(buffer);
    if (used + 1 < size) strncat(buffer, text, size - used - 1);
}

static bool fail(policy_string_t *err, const char *key, const char *why) {
    char message[256] = "";
    append(message, sizeof message, key);
    append(message, sizeof message, ": ");
    append(message, sizeof message, why);
    policy_string_dup(err, message);
    return false;
}

// ---- the hooks ----

void exports_sluice_policy_hooks_describe(exports_sluice_policy_hooks_policy_info_t *ret) {
    policy_string_dup(&ret->name, "header-sanity");
    policy_string_dup(&ret->version, "0.1.0");
    ret->stages.len = 1;
    ret->stages.ptr = malloc(sizeof(sluice_policy_types_stage_t));
    if (ret->stages.ptr == NULL) abort();
    ret->stages.ptr[0] = SLUICE_POLICY_TYPES_STAGE_DATA;
}

bool exports_sluice_policy_hooks_init(policy_list_tuple2_string_string_t *config, policy_string_t *err) {
    bool ok = true;
    for (size_t i = 0; ok && i < config->len; i++) {
        char *key = cstr(&config->ptr[i].f0);
        char *value = cstr(&config->ptr[i].f1);
        if (strncmp(key, "score.", 6) == 0) {
            size_t r = 0;
            while (r < RULES && strcmp(rules[r].name, key + 6) != 0) r++;
            char *end = NULL;
            double score = strtod(value, &end);
            if (r == RULES) {
                ok = fail(err, key, "no such symbol");
            } else if (end == value || *end != '\0') {
                ok = fail(err, key, "not a number");
            } else {
                rules[r].score = score;
            }
        } else if (strcmp(key, "max_headers") == 0) {
            if (!parse_long(value, 1, 100000, &max_headers)) ok = fail(err, key, "a number from 1 to 100000");
        } else if (strcmp(key, "max_age_days") == 0) {
            if (!parse_long(value, 1, 36500, &max_age_days)) ok = fail(err, key, "a number from 1 to 36500");
        } else {
            ok = fail(err, key, "unknown setting (score.NAME, max_headers, max_age_days)");
        }
        free(key);
        free(value);
    }
    policy_list_tuple2_string_string_free(config);
    return ok;
}

static void keep_going(exports_sluice_policy_hooks_decision_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->verdict.tag = SLUICE_POLICY_TYPES_VERDICT_CONTINUE;
}

void exports_sluice_policy_hooks_on_connect(exports_sluice_policy_hooks_context_t *ctx,
                                            exports_sluice_policy_hooks_decision_t *ret) {
    sluice_policy_types_context_free(ctx);
    keep_going(ret);
}

void exports_sluice_policy_hooks_on_helo(exports_sluice_policy_hooks_context_t *ctx,
                                         exports_sluice_policy_hooks_decision_t *ret) {
    sluice_policy_types_context_free(ctx);
    keep_going(ret);
}

void exports_sluice_policy_hooks_on_mail(exports_sluice_policy_hooks_context_t *ctx,
                                         exports_sluice_policy_hooks_decision_t *ret) {
    sluice_policy_types_context_free(ctx);
    keep_going(ret);
}

void exports_sluice_policy_hooks_on_rcpt(exports_sluice_policy_hooks_context_t *ctx,
                                         exports_sluice_policy_hooks_recipient_t *rcpt,
                                         exports_sluice_policy_hooks_decision_t *ret) {
    sluice_policy_types_context_free(ctx);
    sluice_policy_types_recipient_free(rcpt);
    keep_going(ret);
}

// The symbols found so far.
typedef struct {
    bool hit[RULES];
    char detail[RULES][96];
} findings_t;

static void hit(findings_t *f, int rule, const char *detail) {
    if (f->hit[rule]) return;
    f->hit[rule] = true;
    f->detail[rule][0] = '\0';
    if (detail != NULL) append(f->detail[rule], sizeof f->detail[rule], detail);
}

// `left@right` with no spaces, as RFC 5322 §3.6.4 wants (the host gives the identifier with
// or without its angle brackets).
static bool well_formed_mid(const policy_string_t *v) {
    size_t i = 0, n = v->len;
    const uint8_t *p = v->ptr;
    while (i < n && isspace(p[i])) i++;
    while (n > i && isspace(p[n - 1])) n--;
    if (n > i + 1 && p[i] == '<' && p[n - 1] == '>') {
        i++;
        n--;
    }
    size_t at = 0;
    for (size_t k = i; k < n; k++) {
        if (p[k] == '@') {
            if (at) return false;
            at = k;
        } else if (isspace(p[k]) || p[k] == '<' || p[k] == '>') {
            return false;
        }
    }
    return at > i && at + 1 < n;
}

static bool all_caps_subject(const policy_string_t *v) {
    size_t letters = 0;
    for (size_t i = 0; i < v->len; i++) {
        uint8_t c = v->ptr[i];
        if (c >= 'a' && c <= 'z') return false;
        if (c >= 'A' && c <= 'Z') letters++;
    }
    return letters >= 12;
}

// Raw 8-bit bytes in the header section (before the first empty line).
static bool eight_bit_header(sluice_policy_types_borrow_message_t message) {
    policy_list_u8_t raw;
    sluice_policy_types_method_message_raw(message, 0, 64 * 1024, &raw);
    bool found = false;
    for (size_t i = 0; i < raw.len; i++) {
        if (raw.ptr[i] == '\n' && (i + 1 >= raw.len || raw.ptr[i + 1] == '\n' ||
                                   (raw.ptr[i + 1] == '\r' && i + 2 < raw.len && raw.ptr[i + 2] == '\n'))) {
            break;
        }
        if (raw.ptr[i] >= 0x80) {
            found = true;
            break;
        }
    }
    policy_list_u8_free(&raw);
    return found;
}

static void check_headers(sluice_policy_types_borrow_message_t message, findings_t *f) {
    sluice_policy_types_list_header_t headers;
    sluice_policy_types_method_message_headers(message, &headers);
    size_t from = 0, date = 0, subject = 0, mid = 0, to = 0;
    for (size_t i = 0; i < headers.len; i++) {
        const policy_string_t *name = &headers.ptr[i].name;
        const policy_string_t *value = &headers.ptr[i].value;
        if (equals(name, "From")) {
            from++;
        } else if (equals(name, "Date")) {
            date++;
        } else if (equals(name, "Subject")) {
            subject++;
            if (all_caps_subject(value)) hit(f, SUBJ_ALL_CAPS, NULL);
        } else if (equals(name, "Message-ID")) {
            mid++;
            if (!well_formed_mid(value)) {
                char *text = cstr(value);
                hit(f, MID_MALFORMED, text);
                free(text);
            }
        } else if (equals(name, "To")) {
            to++;
        }
    }
    if (from == 0) hit(f, MISSING_FROM, NULL);
    if (from > 1) hit(f, MULTIPLE_FROM, NULL);
    if (date == 0) hit(f, MISSING_DATE, NULL);
    if (mid == 0) hit(f, MISSING_MID, NULL);
    if (subject == 0) hit(f, MISSING_SUBJECT, NULL);
    if (date > 1 || subject > 1 || mid > 1 || to > 1) hit(f, DUPLICATE_SINGLE, NULL);
    if ((long)headers.len > max_headers) {
        char count[32];
        char *digit = count + 20;
        *digit = '\0';
        size_t n = headers.len;
        do {
            *--digit = (char)('0' + n % 10);
            n /= 10;
        } while (n > 0);
        char detail[40] = "";
        append(detail, sizeof detail, digit);
        append(detail, sizeof detail, " fields");
        hit(f, TOO_MANY_HEADERS, detail);
    }
    sluice_policy_types_list_header_free(&headers);

    if (from > 0) {
        sluice_policy_types_list_mailbox_t mailboxes;
        sluice_policy_types_method_message_from(message, &mailboxes);
        bool usable = false;
        for (size_t i = 0; i < mailboxes.len; i++) {
            const policy_option_string_t *address = &mailboxes.ptr[i].address;
            if (address->is_some && memchr(address->val.ptr, '@', address->val.len) != NULL) usable = true;
        }
        if (!usable) hit(f, FROM_NO_ADDRESS, NULL);
        sluice_policy_types_list_mailbox_free(&mailboxes);
    }
    if (date > 0) {
        int64_t when = 0;
        if (!sluice_policy_types_method_message_date(message, &when)) {
            hit(f, DATE_UNPARSEABLE, NULL);
        } else {
            int64_t now = sluice_policy_host_now_millis() / 1000;
            if (when > now + 86400) hit(f, DATE_FUTURE, NULL);
            if (when < now - (int64_t)max_age_days * 86400) hit(f, DATE_PAST, NULL);
        }
    }
    if (eight_bit_header(message)) hit(f, EIGHT_BIT_HEADER, NULL);
}

void exports_sluice_policy_hooks_on_data(exports_sluice_policy_hooks_context_t *ctx,
                                         exports_sluice_policy_hooks_borrow_message_t message,
                                         exports_sluice_policy_hooks_decision_t *ret) {
    sluice_policy_types_context_free(ctx);
    keep_going(ret);
    findings_t f;
    memset(&f, 0, sizeof f);
    check_headers(message, &f);

    size_t count = 0;
    for (int r = 0; r < RULES; r++) count += f.hit[r] && rules[r].score != 0.0;
    if (count == 0) return;
    ret->symbols.ptr = calloc(count, sizeof(sluice_policy_types_symbol_t));
    if (ret->symbols.ptr == NULL) abort();
    char summary[256] = "header problems:";
    for (int r = 0; r < RULES; r++) {
        if (!f.hit[r] || rules[r].score == 0.0) continue;
        sluice_policy_types_symbol_t *s = &ret->symbols.ptr[ret->symbols.len++];
        policy_string_dup(&s->name, rules[r].name);
        s->score = rules[r].score;
        if (f.detail[r][0] != '\0') {
            s->detail.is_some = true;
            policy_string_dup(&s->detail.val, f.detail[r]);
        }
        append(summary, sizeof summary, " ");
        append(summary, sizeof summary, rules[r].name);
    }
    log_line(SLUICE_POLICY_HOST_LOG_LEVEL_DEBUG, summary);
}
