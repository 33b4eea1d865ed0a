#include "hook.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_info.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "rowmath.h"

typedef struct {
    char node[GGML_MAX_NAME];
    int kind;
    int row_mask;
    int seq_id;           /* -1: every sequence */
    float alpha;
    const float *vec;     /* [n_embd]; unit norm for ablation and the gate */

    float *cap_rows;      /* [capacity, n_embd] */
    int32_t *cap_seq;     /* [capacity] */
    int32_t *cap_flags;   /* [capacity] */
    int capacity;
    int count;
    int dropped;

    int done;             /* applied in the current batch */
} lrg_op;

typedef struct {
    const float *basis_t; /* [rank, n_embd] */
    const float *mean;    /* [rank] */
    const float *scale;   /* [rank] */
    const float *weight;  /* [rank] */
    float bias;
    int rank;
    int normalize;        /* divide projections by |h| (cosine similarity) */
    int ablate_harmless;  /* the harmless route ablates; 0 leaves rows alone */
    int adaptive;         /* the harmful route adds alpha * clamp(logit, 0, 1) * v */
} lrg_readout;

typedef struct {
    const float *mean;    /* [rank]; NULL: the gate operation's readout */
    const float *scale;   /* [rank] */
    const float *weight;  /* [rank] */
    float bias;
    double threshold;     /* in logit units */
    int forced_route;     /* -1: the readout decides */
    int route;
    int decided;
    double logit;
} lrg_seq_gate;

typedef struct {
    char name[GGML_MAX_NAME];
    int type;
    int64_t ne0;
    int64_t ne1;
} lrg_probe_entry_t;

struct lrg_state {
    int n_embd;
    int max_rows;

    lrg_op ops[LRG_MAX_OPS];
    int n_ops;
    int gate_op;          /* index of the gate operation, or -1 */
    lrg_readout readout;
    lrg_seq_gate seqs[LRG_MAX_SEQ];

    int n_rows;
    int32_t *row_seq;     /* [max_rows] */
    uint8_t *row_flags;   /* [max_rows] */

    float *scratch;       /* [max_rows, n_embd], for tensors outside host memory */
    bool force_copy;
    char stop_after[GGML_MAX_NAME]; /* "": compute the whole graph */
    int64_t n_stopped;

    bool probe;
    lrg_probe_entry_t *probe_entries; /* [LRG_MAX_PROBE] */
    int n_probe;

    int64_t n_asked;
    int64_t n_observed;
    int n_errors;
    char error[LRG_ERROR_LEN];
};

/* Record an error message; the first one is kept until cleared, because
 * later errors in the same decode are usually its consequences. */
static void set_error(lrg_state *s, const char *fmt, ...) {
    s->n_errors++;
    if (s->error[0] != '\0') {
        return;
    }
    va_list args;
    va_start(args, fmt);
    (void)vsnprintf(s->error, sizeof(s->error), fmt, args);
    va_end(args);
}

lrg_state *lrg_state_new(int n_embd, int max_rows) {
    if (n_embd <= 0 || max_rows <= 0) {
        return NULL;
    }
    lrg_state *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->n_embd = n_embd;
    s->max_rows = max_rows;
    s->gate_op = -1;
    s->row_seq = calloc((size_t)max_rows, sizeof(*s->row_seq));
    s->row_flags = calloc((size_t)max_rows, sizeof(*s->row_flags));
    s->scratch = malloc((size_t)max_rows * (size_t)n_embd * sizeof(float));
    s->probe_entries = calloc(LRG_MAX_PROBE, sizeof(*s->probe_entries));
    if (s->row_seq == NULL || s->row_flags == NULL || s->scratch == NULL ||
        s->probe_entries == NULL) {
        lrg_state_free(s);
        return NULL;
    }
    for (int i = 0; i < LRG_MAX_SEQ; i++) {
        s->seqs[i].forced_route = -1;
    }
    return s;
}

void lrg_state_free(lrg_state *s) {
    if (s == NULL) {
        return;
    }
    free(s->row_seq);
    free(s->row_flags);
    free(s->scratch);
    free(s->probe_entries);
    free(s);
}

void lrg_clear_ops(lrg_state *s) {
    s->n_ops = 0;
    s->gate_op = -1;
    memset(&s->readout, 0, sizeof(s->readout));
    /* The per-sequence readouts point into arrays the caller may now free. */
    for (int i = 0; i < LRG_MAX_SEQ; i++) {
        s->seqs[i].mean = NULL;
        s->seqs[i].scale = NULL;
        s->seqs[i].weight = NULL;
        s->seqs[i].forced_route = -1;
        s->seqs[i].route = LRG_ROUTE_NONE;
        s->seqs[i].decided = 0;
    }
}

/* Append an operation on a node and return its index, or -1. */
static int push_op(lrg_state *s, const char *node, int kind, int row_mask, int seq_id) {
    if (s->n_ops >= LRG_MAX_OPS) {
        set_error(s, "too many operations (max %d)", LRG_MAX_OPS);
        return -1;
    }
    if (node == NULL || strlen(node) == 0 || strlen(node) >= GGML_MAX_NAME) {
        set_error(s, "node name must have 1 to %d characters", GGML_MAX_NAME - 1);
        return -1;
    }
    if (seq_id < -1 || seq_id >= LRG_MAX_SEQ) {
        set_error(s, "sequence id %d is outside -1..%d", seq_id, LRG_MAX_SEQ - 1);
        return -1;
    }
    lrg_op *op = &s->ops[s->n_ops];
    memset(op, 0, sizeof(*op));
    (void)snprintf(op->node, sizeof(op->node), "%s", node);
    op->kind = kind;
    op->row_mask = row_mask;
    op->seq_id = seq_id;
    return s->n_ops++;
}

int lrg_add_edit_op(lrg_state *s, const char *node, int kind, int row_mask, int seq_id,
                    float alpha, const float *vec) {
    if (kind != LRG_OP_ADD && kind != LRG_OP_ABLATE) {
        set_error(s, "operation kind %d is not an edit", kind);
        return -1;
    }
    if (vec == NULL) {
        set_error(s, "edit operation on %s has no vector", node);
        return -1;
    }
    const int i = push_op(s, node, kind, row_mask, seq_id);
    if (i >= 0) {
        s->ops[i].alpha = alpha;
        s->ops[i].vec = vec;
    }
    return i;
}

int lrg_add_capture_op(lrg_state *s, const char *node, int row_mask, int seq_id,
                       float *rows, int32_t *row_seq, int32_t *row_flags, int capacity) {
    if (rows == NULL || row_seq == NULL || row_flags == NULL || capacity <= 0) {
        set_error(s, "capture operation on %s has no buffer", node);
        return -1;
    }
    const int i = push_op(s, node, LRG_OP_CAPTURE, row_mask, seq_id);
    if (i >= 0) {
        s->ops[i].cap_rows = rows;
        s->ops[i].cap_seq = row_seq;
        s->ops[i].cap_flags = row_flags;
        s->ops[i].capacity = capacity;
    }
    return i;
}

int lrg_add_gate_op(lrg_state *s, const char *node, const float *basis_t, int rank,
                    const float *mean, const float *scale, const float *weight, float bias,
                    float alpha, const float *direction) {
    if (s->gate_op >= 0) {
        set_error(s, "a gate operation is already set on %s", s->ops[s->gate_op].node);
        return -1;
    }
    if (basis_t == NULL || mean == NULL || scale == NULL || weight == NULL ||
        direction == NULL || rank <= 0) {
        set_error(s, "gate operation on %s is missing readout arrays", node);
        return -1;
    }
    const int i = push_op(s, node, LRG_OP_GATE, LRG_ROW_PROMPT | LRG_ROW_GENERATED, -1);
    if (i < 0) {
        return -1;
    }
    s->ops[i].alpha = alpha;
    s->ops[i].vec = direction;
    s->readout.basis_t = basis_t;
    s->readout.mean = mean;
    s->readout.scale = scale;
    s->readout.weight = weight;
    s->readout.bias = bias;
    s->readout.rank = rank;
    s->readout.normalize = 0;
    s->readout.ablate_harmless = 1;
    s->gate_op = i;
    return i;
}

int lrg_gate_set_options(lrg_state *s, int normalize, int ablate_harmless, int adaptive) {
    if (s->gate_op < 0) {
        set_error(s, "no gate operation to set options on");
        return -1;
    }
    s->readout.normalize = normalize != 0;
    s->readout.ablate_harmless = ablate_harmless != 0;
    s->readout.adaptive = adaptive != 0;
    return 0;
}

static int check_op(const lrg_state *s, int op) {
    return op >= 0 && op < s->n_ops;
}

int lrg_capture_count(const lrg_state *s, int op) {
    return check_op(s, op) ? s->ops[op].count : -1;
}

int lrg_capture_dropped(const lrg_state *s, int op) {
    return check_op(s, op) ? s->ops[op].dropped : -1;
}

void lrg_capture_reset(lrg_state *s, int op) {
    if (check_op(s, op)) {
        s->ops[op].count = 0;
        s->ops[op].dropped = 0;
    }
}

int lrg_gate_configure_seq(lrg_state *s, int seq, const float *mean, const float *scale,
                           const float *weight, float bias, double threshold, int forced_route) {
    if (seq < 0 || seq >= LRG_MAX_SEQ || forced_route < -1 || forced_route > LRG_ROUTE_HARMFUL) {
        return -1;
    }
    if ((mean == NULL) != (scale == NULL) || (mean == NULL) != (weight == NULL)) {
        return -1;
    }
    s->seqs[seq].mean = mean;
    s->seqs[seq].scale = scale;
    s->seqs[seq].weight = weight;
    s->seqs[seq].bias = bias;
    s->seqs[seq].threshold = threshold;
    s->seqs[seq].forced_route = forced_route;
    return 0;
}

int lrg_gate_reset_seq(lrg_state *s, int seq) {
    if (seq < 0 || seq >= LRG_MAX_SEQ) {
        return -1;
    }
    s->seqs[seq].route = LRG_ROUTE_NONE;
    s->seqs[seq].decided = 0;
    s->seqs[seq].logit = 0.0;
    return 0;
}

int lrg_gate_read_seq(const lrg_state *s, int seq, double *logit, int *route, int *decided) {
    if (seq < 0 || seq >= LRG_MAX_SEQ) {
        return -1;
    }
    *logit = s->seqs[seq].logit;
    *route = s->seqs[seq].route;
    *decided = s->seqs[seq].decided;
    return 0;
}

int lrg_set_batch(lrg_state *s, int n_rows, const int32_t *row_seq, const uint8_t *row_flags) {
    if (n_rows < 0 || n_rows > s->max_rows) {
        set_error(s, "batch of %d rows exceeds the hook's %d rows", n_rows, s->max_rows);
        return -1;
    }
    for (int r = 0; r < n_rows; r++) {
        if (row_seq[r] < 0 || row_seq[r] >= LRG_MAX_SEQ) {
            set_error(s, "row %d has sequence id %d outside 0..%d", r, row_seq[r],
                      LRG_MAX_SEQ - 1);
            return -1;
        }
    }
    if (n_rows > 0) {
        memcpy(s->row_seq, row_seq, (size_t)n_rows * sizeof(*row_seq));
        memcpy(s->row_flags, row_flags, (size_t)n_rows * sizeof(*row_flags));
    }
    s->n_rows = n_rows;
    for (int i = 0; i < s->n_ops; i++) {
        s->ops[i].done = 0;
    }
    return 0;
}

void lrg_set_force_copy(lrg_state *s, bool on) { s->force_copy = on; }

int lrg_set_stop_after(lrg_state *s, const char *node) {
    if (node == NULL) {
        s->stop_after[0] = '\0';
        return 0;
    }
    if (strlen(node) >= sizeof(s->stop_after)) {
        set_error(s, "node name %s is longer than %d bytes", node, GGML_MAX_NAME - 1);
        return -1;
    }
    (void)snprintf(s->stop_after, sizeof(s->stop_after), "%s", node);
    return 0;
}

int64_t lrg_stopped_count(const lrg_state *s) { return s->n_stopped; }

void lrg_set_probe(lrg_state *s, bool on) {
    s->probe = on;
    if (on) {
        s->n_probe = 0;
    }
}

int lrg_probe_count(const lrg_state *s) { return s->n_probe; }

int lrg_probe_entry(const lrg_state *s, int i, char *name, int name_len, int *type,
                    int64_t *ne0, int64_t *ne1) {
    if (i < 0 || i >= s->n_probe || name_len <= 0) {
        return -1;
    }
    (void)snprintf(name, (size_t)name_len, "%s", s->probe_entries[i].name);
    *type = s->probe_entries[i].type;
    *ne0 = s->probe_entries[i].ne0;
    *ne1 = s->probe_entries[i].ne1;
    return 0;
}

int64_t lrg_asked_count(const lrg_state *s) { return s->n_asked; }
int64_t lrg_observed_count(const lrg_state *s) { return s->n_observed; }
int lrg_error_count(const lrg_state *s) { return s->n_errors; }
const char *lrg_state_error(const lrg_state *s) { return s->error; }

void lrg_clear_error(lrg_state *s) {
    s->n_errors = 0;
    s->error[0] = '\0';
}

/* Return the first pending operation on this node, or -1. */
static int find_pending_op(const lrg_state *s, const char *name) {
    for (int i = 0; i < s->n_ops; i++) {
        if (!s->ops[i].done && strcmp(s->ops[i].node, name) == 0) {
            return i;
        }
    }
    return -1;
}

static bool row_selected(const lrg_op *op, int seq, int flags) {
    return (flags & op->row_mask) != 0 && (op->seq_id < 0 || op->seq_id == seq);
}

/* Decide the route of every sequence whose last prompt row is in this
 * batch, from the rows as they are before any operation edits them. */
static void decide_routes(lrg_state *s, const float *rows) {
    const int64_t n = s->n_embd;
    const lrg_readout *ro = &s->readout;
    for (int r = 0; r < s->n_rows; r++) {
        if ((s->row_flags[r] & LRG_ROW_LAST_PROMPT) == 0) {
            continue;
        }
        lrg_seq_gate *g = &s->seqs[s->row_seq[r]];
        const float *h = rows + r * n;
        const int own = g->mean != NULL;
        /* The cosine form scales h by 1/|h|; a zero row keeps scale 1. */
        double scale_h = 1.0;
        if (ro->normalize) {
            const double norm = sqrt(lrg_dot(h, h, n));
            scale_h = norm > 0.0 ? 1.0 / norm : 1.0;
        }
        g->logit = lrg_readout_row_scaled(h, n, scale_h, ro->basis_t, ro->rank,
                                          own ? g->mean : ro->mean, own ? g->scale : ro->scale,
                                          own ? g->weight : ro->weight, own ? g->bias : ro->bias);
        g->decided = 1;
        if (g->forced_route >= 0) {
            g->route = g->forced_route;
        } else {
            g->route = g->logit >= g->threshold ? LRG_ROUTE_HARMFUL : LRG_ROUTE_HARMLESS;
        }
    }
}

/* Apply a gate's route to one row of its sequence; return true when the row changed. */
static bool apply_route(const lrg_state *s, const lrg_op *op, float *h, int seq, int flags) {
    const lrg_seq_gate *g = &s->seqs[seq];
    const int route = g->decided ? g->route : (g->forced_route >= 0 ? g->forced_route : 0);
    if (route == LRG_ROUTE_HARMFUL &&
        (flags & (LRG_ROW_LAST_PROMPT | LRG_ROW_GENERATED)) != 0) {
        float alpha = op->alpha;
        if (s->readout.adaptive) {
            /* The logit is the input-dependent coefficient, kept in [0, 1]. */
            const double c = g->logit < 0.0 ? 0.0 : (g->logit > 1.0 ? 1.0 : g->logit);
            alpha = (float)(c * op->alpha);
        }
        lrg_add_row(h, op->vec, alpha, s->n_embd);
        return true;
    }
    if (route == LRG_ROUTE_HARMLESS && s->readout.ablate_harmless) {
        lrg_ablate_row(h, op->vec, s->n_embd);
        return true;
    }
    return false;
}

/* Run one operation over the rows; return true when it edited them. */
static bool run_op(lrg_state *s, lrg_op *op, float *rows) {
    const int64_t n = s->n_embd;
    bool edited = false;
    for (int r = 0; r < s->n_rows; r++) {
        const int seq = s->row_seq[r];
        const int flags = s->row_flags[r];
        float *h = rows + r * n;
        if (op->kind == LRG_OP_GATE) {
            edited |= apply_route(s, op, h, seq, flags);
            continue;
        }
        if (!row_selected(op, seq, flags)) {
            continue;
        }
        if (op->kind == LRG_OP_CAPTURE) {
            if (op->count >= op->capacity) {
                op->dropped++;
                continue;
            }
            memcpy(op->cap_rows + (int64_t)op->count * n, h, (size_t)n * sizeof(float));
            op->cap_seq[op->count] = seq;
            op->cap_flags[op->count] = flags;
            op->count++;
        } else if (op->kind == LRG_OP_ADD) {
            lrg_add_row(h, op->vec, op->alpha, n);
            edited = true;
        } else {
            lrg_ablate_row(h, op->vec, n);
            edited = true;
        }
    }
    return edited;
}

/* Mark every pending operation on this node done without running it. */
static void skip_node(lrg_state *s, const char *name) {
    for (int i = 0; i < s->n_ops; i++) {
        if (strcmp(s->ops[i].node, name) == 0) {
            s->ops[i].done = 1;
        }
    }
}

/* The ask=false half: run the pending operations on the node's rows. */
static void observe(lrg_state *s, struct ggml_tensor *t) {
    s->n_observed++;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
        set_error(s, "node %s has type %s (contiguous: %d); operations need contiguous f32",
                  t->name, ggml_type_name(t->type), (int)ggml_is_contiguous(t));
        skip_node(s, t->name);
        return;
    }
    if (t->ne[0] != s->n_embd || t->ne[1] != s->n_rows || t->ne[2] != 1 || t->ne[3] != 1) {
        set_error(s, "node %s has shape [%lld, %lld, %lld, %lld]; expected [%d, %d] "
                  "(the batch must be one micro-batch)", t->name, (long long)t->ne[0],
                  (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                  s->n_embd, s->n_rows);
        skip_node(s, t->name);
        return;
    }

    const size_t nbytes = ggml_nbytes(t);
    const bool host = !s->force_copy && t->buffer != NULL && ggml_backend_buffer_is_host(t->buffer);
    float *rows = host ? (float *)t->data : s->scratch;
    if (!host) {
        ggml_backend_tensor_get(t, s->scratch, 0, nbytes);
    }

    bool edited = false;
    if (s->gate_op >= 0 && !s->ops[s->gate_op].done &&
        strcmp(s->ops[s->gate_op].node, t->name) == 0) {
        decide_routes(s, rows);
    }
    for (int i = 0; i < s->n_ops; i++) {
        lrg_op *op = &s->ops[i];
        if (op->done || strcmp(op->node, t->name) != 0) {
            continue;
        }
        edited |= run_op(s, op, rows);
        op->done = 1;
    }

    if (!host && edited) {
        ggml_backend_tensor_set(t, s->scratch, 0, nbytes);
    }
}

static void record_probe(lrg_state *s, const struct ggml_tensor *t) {
    if (s->n_probe >= LRG_MAX_PROBE) {
        return;
    }
    lrg_probe_entry_t *e = &s->probe_entries[s->n_probe++];
    (void)snprintf(e->name, sizeof(e->name), "%s", t->name);
    e->type = (int)t->type;
    e->ne0 = t->ne[0];
    e->ne1 = t->ne[1];
}

bool lrg_eval_callback(struct ggml_tensor *t, bool ask, void *user_data) {
    lrg_state *s = (lrg_state *)user_data;
    if (ask) {
        s->n_asked++;
        if (s->probe) {
            record_probe(s, t);
            return false;
        }
        if (s->n_rows == 0) {
            return false;
        }
        return find_pending_op(s, t->name) >= 0 || strcmp(s->stop_after, t->name) == 0;
    }
    if (find_pending_op(s, t->name) >= 0) {
        observe(s, t);
    }
    if (s->stop_after[0] != '\0' && strcmp(s->stop_after, t->name) == 0) {
        /* Returning false ends the scheduler's current split here. */
        s->n_stopped++;
        return false;
    }
    return true;
}

const char *lrg_build_info(int field) {
    switch (field) {
    case 0:
        return LRG_LLAMA_CPP_VERSION;
    case 1:
        return LRG_GGML_H_SHA256;
    case 2:
        return LRG_GGML_BACKEND_H_SHA256;
    default:
        return "";
    }
}

/*
 * Check that struct ggml_tensor as compiled here matches the loaded ggml:
 * build a 2-D tensor through ggml's own functions and read its fields
 * directly. Return 0 when they agree, -1 otherwise.
 */
int lrg_check_tensor_layout(void) {
    struct ggml_init_params params = {
        .mem_size = ggml_tensor_overhead() * 4,
        .mem_buffer = NULL,
        .no_alloc = true,
    };
    struct ggml_context *ctx = ggml_init(params);
    if (ctx == NULL) {
        return -1;
    }
    struct ggml_tensor *t = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 7, 3);
    ggml_set_name(t, "lrg-layout");
    const int ok = t->ne[0] == 7 && t->ne[1] == 3 && t->type == GGML_TYPE_F32 &&
                   t->nb[0] == 4 && t->nb[1] == 28 && strcmp(t->name, "lrg-layout") == 0 &&
                   strcmp(ggml_get_name(t), t->name) == 0 && ggml_nrows(t) == 3;
    ggml_free(ctx);
    return ok ? 0 : -1;
}
