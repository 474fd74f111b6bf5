/*
 * shim.c - one libotr endpoint per ShimEndpoint, driven from Rust.
 *
 * Part of otr-rs's libotr test harness (MIT OR Apache-2.0).
 *
 * Every endpoint owns its own OtrlUserState holding exactly one local
 * account (protocol SHIM_PROTOCOL) that talks to exactly one remote
 * account.  Everything libotr reports through its callbacks is handed,
 * in order, to a "sink" function supplied by the caller (the Rust side),
 * which queues it.  Nothing here keeps global mutable state apart from
 * libotr's own one-time initialisation (shim_init).
 *
 * Sink records: kind + up to two byte strings (a, b).  For SHIM_ERROR and
 * SHIM_LOG the text is a followed by b; for SHIM_SECURE a is the remote
 * fingerprint and b the ssid (both lowercase hex); for SHIM_SMP_REQUEST a
 * is the question or NULL when there is none.
 */

#define _POSIX_C_SOURCE 200809L /* strdup */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <gcrypt.h>
#include <libotr/proto.h>
#include <libotr/privkey.h>
#include <libotr/message.h>
#include <libotr/instag.h>
#include <libotr/tlv.h>

#define SHIM_PROTOCOL "xmpp"

/* Keep in sync with `Kind` in src/ffi.rs. */
enum {
    SHIM_NET = 0,           /* a: transport message to deliver */
    SHIM_SECURE = 1,        /* a: remote fp hex, b: ssid hex */
    SHIM_INSECURE = 2,
    SHIM_FINISHED = 3,
    SHIM_MSG_ENCRYPTED = 4, /* a: text */
    SHIM_MSG_PLAIN = 5,     /* a: text */
    SHIM_SMP_REQUEST = 6,   /* a: question or NULL */
    SHIM_SMP_SUCCESS = 7,
    SHIM_SMP_FAILURE = 8,
    SHIM_SMP_ABORTED = 9,
    SHIM_SYMKEY = 10,       /* a: key hex */
    SHIM_ERROR = 11,        /* a ++ b: text */
    SHIM_LOG = 12           /* a ++ b: text */
};

typedef void (*shim_sink_fn)(void *sink, int kind, const char *a,
        size_t alen, const char *b, size_t blen);

typedef struct ShimEndpoint {
    OtrlUserState us;
    char *account;
    char *peer;
    OtrlPolicy policy;
    int mms;                  /* max message size, 0 = no fragmentation */
    shim_sink_fn sink;
    void *sink_data;
    int decrypted;            /* set by convert_msg(RECEIVING), see
                                 shim_receive */
    unsigned int timer_interval; /* last timer_control request, seconds */
    int smp_pending;          /* the remote asked us for an SMP answer */
    otrl_instag_t smp_instance; /* ... on the context with this tag */
    char fingerprint[41];     /* ours, lowercase hex */
} ShimEndpoint;

/* ---------------------------------------------------------------- */
/* small helpers                                                     */

static void emit(ShimEndpoint *ep, int kind, const char *a, const char *b)
{
    ep->sink(ep->sink_data, kind, a, a ? strlen(a) : 0, b, b ? strlen(b) : 0);
}

static void to_hex(char *out, const unsigned char *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

static ConnContext *find_context(ShimEndpoint *ep, otrl_instag_t instag)
{
    return otrl_context_find(ep->us, ep->peer, ep->account, SHIM_PROTOCOL,
            instag, 0, NULL, NULL, NULL);
}

/* The context a command that needs a private conversation acts on: the
 * one libotr considers best (most secure, most recent). */
static ConnContext *best_context(ShimEndpoint *ep)
{
    return find_context(ep, OTRL_INSTAG_BEST);
}

/* Report that `context` is (still) secure. */
static void report_secure(ShimEndpoint *ep, ConnContext *context)
{
    char fp[41] = "";
    char ssid[2 * 20 + 1] = "";
    size_t sidlen = context->sessionid_len;

    if (context->active_fingerprint && context->active_fingerprint->fingerprint)
        to_hex(fp, context->active_fingerprint->fingerprint, 20);
    if (sidlen > sizeof(context->sessionid))
        sidlen = sizeof(context->sessionid);
    to_hex(ssid, context->sessionid, sidlen);
    emit(ep, SHIM_SECURE, fp, ssid);
}

/* ---------------------------------------------------------------- */
/* libotr callbacks; opdata is always the ShimEndpoint               */

static OtrlPolicy cb_policy(void *opdata, ConnContext *context)
{
    (void)context;
    return ((ShimEndpoint *)opdata)->policy;
}

static void cb_create_privkey(void *opdata, const char *accountname,
        const char *protocol)
{
    /* Never expected: shim_new always loads or creates the key. */
    (void)accountname;
    (void)protocol;
    emit(opdata, SHIM_ERROR, "libotr asked for a missing private key", NULL);
}

static int cb_is_logged_in(void *opdata, const char *accountname,
        const char *protocol, const char *recipient)
{
    (void)opdata;
    (void)accountname;
    (void)protocol;
    (void)recipient;
    return 1;
}

static void cb_inject_message(void *opdata, const char *accountname,
        const char *protocol, const char *recipient, const char *message)
{
    (void)accountname;
    (void)protocol;
    (void)recipient;
    /* In FINISHED, otrl_message_sending "sends" an empty string; a real
     * transport would drop it and so do we. */
    if (message && *message)
        emit(opdata, SHIM_NET, message, NULL);
}

static void cb_gone_secure(void *opdata, ConnContext *context)
{
    report_secure(opdata, context);
}

static void cb_gone_insecure(void *opdata, ConnContext *context)
{
    /* libotr 4.x never calls this; `insecure` comes from shim_end. */
    (void)context;
    emit(opdata, SHIM_LOG, "libotr: gone insecure", NULL);
}

static void cb_still_secure(void *opdata, ConnContext *context, int is_reply)
{
    (void)is_reply;
    report_secure(opdata, context);
}

static int cb_max_message_size(void *opdata, ConnContext *context)
{
    (void)context;
    return ((ShimEndpoint *)opdata)->mms;
}

static void cb_received_symkey(void *opdata, ConnContext *context,
        unsigned int use, const unsigned char *usedata, size_t usedatalen,
        const unsigned char *symkey)
{
    char hex[2 * OTRL_EXTRAKEY_BYTES + 1];
    (void)context;
    (void)use;
    (void)usedata;
    (void)usedatalen;
    to_hex(hex, symkey, OTRL_EXTRAKEY_BYTES);
    emit(opdata, SHIM_SYMKEY, hex, NULL);
}

static const char *cb_otr_error_message(void *opdata, ConnContext *context,
        OtrlErrorCode err_code)
{
    (void)opdata;
    (void)context;
    switch (err_code) {
    case OTRL_ERRCODE_ENCRYPTION_ERROR:
        return "Error occurred encrypting message.";
    case OTRL_ERRCODE_MSG_NOT_IN_PRIVATE:
        return "You sent encrypted data to a peer who wasn't expecting it.";
    case OTRL_ERRCODE_MSG_UNREADABLE:
        return "You transmitted an unreadable encrypted message.";
    case OTRL_ERRCODE_MSG_MALFORMED:
        return "You transmitted a malformed data message.";
    default:
        return NULL;
    }
}

static void cb_otr_error_message_free(void *opdata, const char *err_msg)
{
    /* The strings above are static. */
    (void)opdata;
    (void)err_msg;
}

static void cb_handle_smp_event(void *opdata, OtrlSMPEvent smp_event,
        ConnContext *context, unsigned short progress_percent,
        char *question);

static void cb_handle_msg_event(void *opdata, OtrlMessageEvent msg_event,
        ConnContext *context, const char *message, gcry_error_t err)
{
    ShimEndpoint *ep = opdata;
    (void)context;

    switch (msg_event) {
    case OTRL_MSGEVENT_ENCRYPTION_REQUIRED:
        emit(ep, SHIM_ERROR, "send refused: policy requires encryption "
                "(message kept, OTR query sent)", NULL);
        break;
    case OTRL_MSGEVENT_ENCRYPTION_ERROR:
        emit(ep, SHIM_ERROR, "send refused: error encrypting the message",
                NULL);
        break;
    case OTRL_MSGEVENT_CONNECTION_ENDED:
        emit(ep, SHIM_ERROR, "send refused: the remote ended the private "
                "conversation", NULL);
        break;
    case OTRL_MSGEVENT_SETUP_ERROR:
        emit(ep, SHIM_ERROR, "AKE setup error: ", gcry_strerror(err));
        break;
    case OTRL_MSGEVENT_MSG_REFLECTED:
        emit(ep, SHIM_ERROR, "received our own OTR message (reflected)",
                NULL);
        break;
    case OTRL_MSGEVENT_MSG_RESENT:
        emit(ep, SHIM_LOG, "libotr resent the last message", NULL);
        break;
    case OTRL_MSGEVENT_RCVDMSG_NOT_IN_PRIVATE:
        emit(ep, SHIM_ERROR, "received an encrypted message but no private "
                "conversation is established", NULL);
        break;
    case OTRL_MSGEVENT_RCVDMSG_UNREADABLE:
        emit(ep, SHIM_ERROR, "received an unreadable encrypted message",
                NULL);
        break;
    case OTRL_MSGEVENT_RCVDMSG_MALFORMED:
        emit(ep, SHIM_ERROR, "received a malformed message", NULL);
        break;
    case OTRL_MSGEVENT_LOG_HEARTBEAT_RCVD:
        emit(ep, SHIM_LOG, "heartbeat received", NULL);
        break;
    case OTRL_MSGEVENT_LOG_HEARTBEAT_SENT:
        emit(ep, SHIM_LOG, "heartbeat sent", NULL);
        break;
    case OTRL_MSGEVENT_RCVDMSG_GENERAL_ERR:
        emit(ep, SHIM_ERROR, "received OTR Error message: ", message);
        break;
    case OTRL_MSGEVENT_RCVDMSG_UNENCRYPTED:
        emit(ep, SHIM_ERROR, "received an unencrypted message (not "
                "delivered): ", message);
        break;
    case OTRL_MSGEVENT_RCVDMSG_UNRECOGNIZED:
        emit(ep, SHIM_ERROR, "received an unrecognized OTR message", NULL);
        break;
    case OTRL_MSGEVENT_RCVDMSG_FOR_OTHER_INSTANCE:
        emit(ep, SHIM_ERROR, "received a message for another instance",
                NULL);
        break;
    default:
        emit(ep, SHIM_LOG, "unknown libotr message event", NULL);
        break;
    }
}

static void cb_create_instag(void *opdata, const char *accountname,
        const char *protocol)
{
    /* Instance tags are never persisted: two endpoints of one account
     * must differ.  libotr insists on writing them to a FILE*. */
    FILE *f = tmpfile();
    if (f) {
        otrl_instag_generate_FILEp(((ShimEndpoint *)opdata)->us, f,
                accountname, protocol);
        fclose(f);
    }
}

static void cb_convert_msg(void *opdata, ConnContext *context,
        OtrlConvertType convert_type, char **dest, const char *src)
{
    (void)context;
    (void)src;
    /* No conversion; we only use the call as libotr's signal that it is
     * delivering the plaintext of a decrypted data message. */
    *dest = NULL;
    if (convert_type == OTRL_CONVERT_RECEIVING)
        ((ShimEndpoint *)opdata)->decrypted = 1;
}

static void cb_convert_free(void *opdata, ConnContext *context, char *dest)
{
    (void)opdata;
    (void)context;
    (void)dest;
}

static void cb_timer_control(void *opdata, unsigned int interval)
{
    ((ShimEndpoint *)opdata)->timer_interval = interval;
}

static const OtrlMessageAppOps shim_ops = {
    cb_policy,
    cb_create_privkey,
    cb_is_logged_in,
    cb_inject_message,
    NULL,                       /* update_context_list */
    NULL,                       /* new_fingerprint */
    NULL,                       /* write_fingerprints */
    cb_gone_secure,
    cb_gone_insecure,
    cb_still_secure,
    cb_max_message_size,
    NULL,                       /* account_name */
    NULL,                       /* account_name_free */
    cb_received_symkey,
    cb_otr_error_message,
    cb_otr_error_message_free,
    NULL,                       /* resent_msg_prefix: libotr's "[resent]" */
    NULL,                       /* resent_msg_prefix_free */
    cb_handle_smp_event,
    cb_handle_msg_event,
    cb_create_instag,
    cb_convert_msg,
    cb_convert_free,
    cb_timer_control,
};

static void cb_handle_smp_event(void *opdata, OtrlSMPEvent smp_event,
        ConnContext *context, unsigned short progress_percent,
        char *question)
{
    ShimEndpoint *ep = opdata;
    (void)progress_percent;

    switch (smp_event) {
    case OTRL_SMPEVENT_ASK_FOR_SECRET:
    case OTRL_SMPEVENT_ASK_FOR_ANSWER:
        ep->smp_pending = 1;
        ep->smp_instance = context->their_instance;
        emit(ep, SHIM_SMP_REQUEST,
                smp_event == OTRL_SMPEVENT_ASK_FOR_ANSWER ? question : NULL,
                NULL);
        break;
    case OTRL_SMPEVENT_IN_PROGRESS:
        emit(ep, SHIM_LOG, "smp in progress", NULL);
        break;
    case OTRL_SMPEVENT_SUCCESS:
        ep->smp_pending = 0;
        emit(ep, SHIM_SMP_SUCCESS, NULL, NULL);
        break;
    case OTRL_SMPEVENT_FAILURE:
        ep->smp_pending = 0;
        emit(ep, SHIM_SMP_FAILURE, NULL, NULL);
        break;
    case OTRL_SMPEVENT_ABORT:
        ep->smp_pending = 0;
        emit(ep, SHIM_SMP_ABORTED, NULL, NULL);
        break;
    case OTRL_SMPEVENT_CHEATED:
    case OTRL_SMPEVENT_ERROR:
        /* message.h: "otrl_message_abort_smp should be called". */
        ep->smp_pending = 0;
        otrl_message_abort_smp(ep->us, &shim_ops, ep, context);
        emit(ep, SHIM_SMP_ABORTED, NULL, NULL);
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------------- */
/* public API (see src/ffi.rs)                                       */

/* Initialise libotr (and libgcrypt through it).  Call exactly once per
 * process before anything else; returns 0 on success. */
int shim_init(void)
{
    return otrl_init(OTRL_VERSION_MAJOR, OTRL_VERSION_MINOR,
            OTRL_VERSION_SUB) ? -1 : 0;
}

static int file_has_content(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* Load (or generate, 1024-bit DSA) the private key of ep->account. */
static gcry_error_t load_key(ShimEndpoint *ep, const char *keyfile,
        const char **what)
{
    gcry_error_t err = 0;

    if (keyfile == NULL) {
        /* Default: a fresh key in an anonymous temporary file. */
        FILE *f = tmpfile();
        *what = "cannot generate private key";
        if (!f)
            return gcry_error(GPG_ERR_ENOENT);
        err = otrl_privkey_generate_FILEp(ep->us, f, ep->account,
                SHIM_PROTOCOL);
        fclose(f);
        return err;
    }
    if (file_has_content(keyfile)) {
        *what = "cannot read private key file";
        err = otrl_privkey_read(ep->us, keyfile);
        if (err)
            return err;
    }
    if (!otrl_privkey_find(ep->us, ep->account, SHIM_PROTOCOL)) {
        /* Missing, empty, or holding only other accounts' keys: libotr
         * rewrites the file with every key it knows plus the new one. */
        *what = "cannot generate private key";
        err = otrl_privkey_generate(ep->us, keyfile, ep->account,
                SHIM_PROTOCOL);
    }
    return err;
}

void shim_free(ShimEndpoint *ep);

/* Create an endpoint.  keyfile may be NULL.  On failure returns NULL and
 * writes a message into errbuf. */
ShimEndpoint *shim_new(const char *account, const char *peer,
        unsigned int policy, int max_msg_size, const char *keyfile,
        shim_sink_fn sink, void *sink_data, char *errbuf, size_t errlen)
{
    ShimEndpoint *ep = calloc(1, sizeof(*ep));
    const char *what = "out of memory";
    gcry_error_t err = gcry_error(GPG_ERR_ENOMEM);
    unsigned char raw[20];

    if (!ep)
        goto fail;
    ep->account = strdup(account);
    ep->peer = strdup(peer);
    ep->us = otrl_userstate_create();
    ep->policy = policy;
    ep->mms = max_msg_size;
    ep->sink = sink;
    ep->sink_data = sink_data;
    if (!ep->account || !ep->peer || !ep->us)
        goto fail;

    err = load_key(ep, keyfile, &what);
    if (err)
        goto fail;
    what = "cannot compute fingerprint";
    err = gcry_error(GPG_ERR_NO_SECKEY);
    if (!otrl_privkey_fingerprint_raw(ep->us, raw, ep->account,
                SHIM_PROTOCOL))
        goto fail;
    to_hex(ep->fingerprint, raw, 20);

    cb_create_instag(ep, ep->account, SHIM_PROTOCOL);
    what = "cannot generate instance tag";
    if (!otrl_instag_find(ep->us, ep->account, SHIM_PROTOCOL))
        goto fail;
    return ep;

fail:
    snprintf(errbuf, errlen, "%s: %s", what, gcry_strerror(err));
    shim_free(ep);
    return NULL;
}

void shim_free(ShimEndpoint *ep)
{
    if (!ep)
        return;
    if (ep->us)
        otrl_userstate_free(ep->us);
    free(ep->account);
    free(ep->peer);
    free(ep);
}

/* Our fingerprint, 40 lowercase hex digits, valid while ep lives. */
const char *shim_fingerprint(const ShimEndpoint *ep)
{
    return ep->fingerprint;
}

unsigned int shim_instance_tag(ShimEndpoint *ep)
{
    OtrlInsTag *tag = otrl_instag_find(ep->us, ep->account, SHIM_PROTOCOL);
    return tag ? tag->instag : 0;
}

/* msgstate of the best context (OTRL_MSGSTATE_*), PLAINTEXT if none. */
int shim_msgstate(ShimEndpoint *ep)
{
    ConnContext *ctx = best_context(ep);
    return ctx ? (int)ctx->msgstate : (int)OTRL_MSGSTATE_PLAINTEXT;
}

/* A transport message arrived (NUL-terminated; the caller rejects
 * payloads containing NUL).
 *
 * How a delivered message is classified:
 *   - otrl_message_receiving returns 1: nothing is delivered (protocol
 *     message, or libotr refused it and said why via handle_msg_event).
 *   - it returns 0 and libotr called convert_msg(OTRL_CONVERT_RECEIVING)
 *     during this call: libotr only does so right before handing out the
 *     plaintext of a data message it decrypted, so *newmsg is `encrypted`.
 *   - it returns 0 otherwise: the text arrived unencrypted and libotr let
 *     it through (it only does while the best context is PLAINTEXT and the
 *     policy does not require encryption; else it raises
 *     RCVDMSG_UNENCRYPTED and returns 1).  It is *newmsg when libotr
 *     stripped a whitespace tag, else the message itself: `plain`.
 *     Exception: an "?OTR Error:" message that lacks the space after the
 *     colon is passed through by libotr as ordinary text; we report it
 *     as an error, not a message.
 *   - an empty text (heartbeat, bare whitespace tag) is never reported.
 * A received disconnect TLV (context now FINISHED) is reported after the
 * text. */
void shim_receive(ShimEndpoint *ep, const char *msg)
{
    char *newmsg = NULL;
    OtrlTLV *tlvs = NULL;
    ConnContext *ctx = NULL;
    int ignore;

    ep->decrypted = 0;
    ignore = otrl_message_receiving(ep->us, &shim_ops, ep, ep->account,
            SHIM_PROTOCOL, ep->peer, msg, &newmsg, &tlvs, &ctx, NULL, NULL);
    if (!ignore) {
        const char *text = newmsg ? newmsg : msg;
        if (ep->decrypted) {
            if (*text)
                emit(ep, SHIM_MSG_ENCRYPTED, text, NULL);
        } else if (!newmsg &&
                otrl_proto_message_type(msg) == OTRL_MSGTYPE_ERROR) {
            emit(ep, SHIM_ERROR, "received OTR Error message: ", msg);
        } else if (*text) {
            emit(ep, SHIM_MSG_PLAIN, text, NULL);
        }
    }
    if (tlvs && otrl_tlv_find(tlvs, OTRL_TLV_DISCONNECTED))
        emit(ep, SHIM_FINISHED, NULL, NULL);
    ep->decrypted = 0;
    otrl_tlv_free(tlvs);
    otrl_message_free(newmsg);
}

/* The local user sends `text` to the best instance of the remote.
 * libotr injects whatever has to go out (fragmented as needed); when it
 * leaves *messagep NULL the message is to be sent unchanged, which is
 * the application's job. */
void shim_send(ShimEndpoint *ep, const char *text)
{
    char *out = NULL;
    gcry_error_t err = otrl_message_sending(ep->us, &shim_ops, ep,
            ep->account, SHIM_PROTOCOL, ep->peer, OTRL_INSTAG_BEST, text,
            NULL, &out, OTRL_FRAGMENT_SEND_ALL, NULL, NULL, NULL);
    if (err)
        emit(ep, SHIM_ERROR, "send refused: ", gcry_strerror(err));
    else if (!out && *text)
        emit(ep, SHIM_NET, text, NULL);
    otrl_message_free(out);
}

/* Emit libotr's default OTR Query message for our policy. */
void shim_query(ShimEndpoint *ep)
{
    char *q = otrl_proto_default_query_msg(ep->account, ep->policy);
    if (q)
        emit(ep, SHIM_NET, q, NULL);
    else
        emit(ep, SHIM_ERROR, "cannot build an OTR query message", NULL);
    free(q);
}

/* End the private conversation with every instance of the remote. */
void shim_end(ShimEndpoint *ep)
{
    ConnContext *c;
    int was_private = 0;

    for (c = ep->us->context_root; c; c = c->next) {
        if (strcmp(c->username, ep->peer) == 0 &&
                strcmp(c->accountname, ep->account) == 0 &&
                strcmp(c->protocol, SHIM_PROTOCOL) == 0 &&
                c->msgstate != OTRL_MSGSTATE_PLAINTEXT)
            was_private = 1;
    }
    otrl_message_disconnect_all_instances(ep->us, &shim_ops, ep,
            ep->account, SHIM_PROTOCOL, ep->peer);
    ep->smp_pending = 0;
    if (was_private)
        emit(ep, SHIM_INSECURE, NULL, NULL);
}

/* The context an SMP command acts on, or NULL (error reported). */
static ConnContext *smp_context(ShimEndpoint *ep, int answering)
{
    ConnContext *ctx = answering && ep->smp_pending
            ? find_context(ep, ep->smp_instance) : best_context(ep);
    if (!ctx || ctx->msgstate != OTRL_MSGSTATE_ENCRYPTED) {
        emit(ep, SHIM_ERROR, "no private conversation", NULL);
        return NULL;
    }
    return ctx;
}

/* Start SMP; question may be NULL. */
void shim_smp(ShimEndpoint *ep, const char *question,
        const unsigned char *secret, size_t secretlen)
{
    ConnContext *ctx = smp_context(ep, 0);
    if (!ctx)
        return;
    if (question)
        otrl_message_initiate_smp_q(ep->us, &shim_ops, ep, ctx, question,
                secret, secretlen);
    else
        otrl_message_initiate_smp(ep->us, &shim_ops, ep, ctx, secret,
                secretlen);
}

void shim_smp_answer(ShimEndpoint *ep, const unsigned char *secret,
        size_t secretlen)
{
    ConnContext *ctx = smp_context(ep, 1);
    if (!ctx)
        return;
    ep->smp_pending = 0;
    otrl_message_respond_smp(ep->us, &shim_ops, ep, ctx, secret, secretlen);
}

void shim_smp_abort(ShimEndpoint *ep)
{
    ConnContext *ctx = smp_context(ep, 1);
    if (!ctx)
        return;
    ep->smp_pending = 0;
    otrl_message_abort_smp(ep->us, &shim_ops, ep, ctx);
}

/* Send TLV 8 (use, usedata) and report the extra symmetric key. */
void shim_symkey(ShimEndpoint *ep, unsigned int use,
        const unsigned char *usedata, size_t usedatalen)
{
    unsigned char key[OTRL_EXTRAKEY_BYTES];
    char hex[2 * OTRL_EXTRAKEY_BYTES + 1];
    ConnContext *ctx = best_context(ep);
    gcry_error_t err;

    if (!ctx || ctx->msgstate != OTRL_MSGSTATE_ENCRYPTED) {
        emit(ep, SHIM_ERROR, "no private conversation", NULL);
        return;
    }
    err = otrl_message_symkey(ep->us, &shim_ops, ep, ctx, use, usedata,
            usedatalen, key);
    if (err) {
        emit(ep, SHIM_ERROR, "symkey failed: ", gcry_strerror(err));
        return;
    }
    to_hex(hex, key, sizeof(key));
    emit(ep, SHIM_SYMKEY, hex, NULL);
}

/* Interval last requested through timer_control (0 = no timer). */
unsigned int shim_timer_interval(const ShimEndpoint *ep)
{
    return ep->timer_interval;
}

/* What the application's timer must do when it fires. */
void shim_poll(ShimEndpoint *ep)
{
    otrl_message_poll(ep->us, &shim_ops, ep);
}
