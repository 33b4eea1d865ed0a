/*
 * lrgate's eval callback for llama.cpp: reads and edits named graph nodes
 * (l_out-N and any other node) while llama_decode runs.
 *
 * Contract with ggml's scheduler (ggml-backend.h, llama.cpp as shipped in
 * llama-cpp-python 0.3.36): lrg_eval_callback is called from the thread
 * that runs llama_decode, first with ask=true for every graph node. It
 * returns true for nodes that an operation names. The scheduler then
 * computes the graph up to that node, synchronizes, and calls it again with
 * ask=false; at that moment later nodes have not run, so an edit of the
 * node's data changes the rest of the forward pass.
 *
 * Ownership: the state is created and freed by lrg_state_new/free. Every
 * array passed in (vectors, basis, capture buffers) is owned by the caller,
 * which keeps it alive and unmoved until the state is freed or the
 * operation is cleared. The hook never exits the process: a problem found
 * inside the callback is counted and described in lrg_state_error.
 *
 * Rows: before each llama_decode the caller describes the batch row by row
 * (sequence id and LRG_ROW_* flags). The batch must reach the graph as one
 * micro-batch, in order (n_ubatch >= n_tokens, unified KV cache); a node
 * whose row count differs from the batch is reported as an error.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct ggml_tensor;

#define LRG_MAX_OPS 64
#define LRG_MAX_SEQ 256
#define LRG_MAX_PROBE 8192
#define LRG_ERROR_LEN 256

enum lrg_op_kind {
    LRG_OP_CAPTURE = 0, /* copy selected rows into a host buffer */
    LRG_OP_ADD = 1,     /* h <- h + alpha * v */
    LRG_OP_ABLATE = 2,  /* h <- h - (h . v) v, v of unit norm */
    LRG_OP_GATE = 3,    /* decide per sequence, then add or ablate */
};

/* Row flags; a row matches an operation when flags & row_mask != 0. */
enum lrg_row_flag {
    LRG_ROW_PROMPT = 1,      /* any prompt row, the last one included */
    LRG_ROW_LAST_PROMPT = 2, /* the last prompt row of its sequence */
    LRG_ROW_GENERATED = 4,   /* a row of a sampled token */
};

enum lrg_route {
    LRG_ROUTE_NONE = 0,
    LRG_ROUTE_HARMLESS = 1, /* ablate v on every row of the sequence */
    LRG_ROUTE_HARMFUL = 2,  /* add alpha * v to the last prompt and generated rows */
};

typedef struct lrg_state lrg_state;

/* Create a state for rows of width n_embd and batches of at most max_rows. */
lrg_state *lrg_state_new(int n_embd, int max_rows);
void lrg_state_free(lrg_state *s);

/* The callback to store in llama_context_params.cb_eval, with the state as
 * cb_eval_user_data. */
bool lrg_eval_callback(struct ggml_tensor *t, bool ask, void *user_data);

/* Operations, applied in the order added when several name one node. Each
 * returns the operation's index, or -1 with a message in lrg_state_error. */
void lrg_clear_ops(lrg_state *s);
int lrg_add_edit_op(lrg_state *s, const char *node, int kind, int row_mask, int seq_id,
                    float alpha, const float *vec);
int lrg_add_capture_op(lrg_state *s, const char *node, int row_mask, int seq_id,
                       float *rows, int32_t *row_seq, int32_t *row_flags, int capacity);
int lrg_add_gate_op(lrg_state *s, const char *node, const float *basis_t, int rank,
                    const float *mean, const float *scale, const float *weight, float bias,
                    float alpha, const float *direction);

/* Gate options: normalize divides the projections by the row's norm
 * (a cosine-similarity condition, as in conditional activation steering);
 * ablate_harmless = 0 leaves rows of harmless sequences unedited; adaptive
 * scales the harmful route's alpha by the logit clamped to [0, 1] (an
 * input-dependent coefficient, as in AdaSteer). */
int lrg_gate_set_options(lrg_state *s, int normalize, int ablate_harmless, int adaptive);

/* Capture buffer bookkeeping: rows written since the last reset, and rows
 * that did not fit. */
int lrg_capture_count(const lrg_state *s, int op);
int lrg_capture_dropped(const lrg_state *s, int op);
void lrg_capture_reset(lrg_state *s, int op);

/* Per-sequence gate state: the readout of the sequence's language (arrays
 * of [rank]; NULL keeps the gate operation's own), its threshold in logit
 * units, and forced_route (-1 lets the readout decide). */
int lrg_gate_configure_seq(lrg_state *s, int seq, const float *mean, const float *scale,
                           const float *weight, float bias, double threshold, int forced_route);
int lrg_gate_reset_seq(lrg_state *s, int seq);
int lrg_gate_read_seq(const lrg_state *s, int seq, double *logit, int *route, int *decided);

/* Describe the next batch; n_rows == 0 disables every operation. */
int lrg_set_batch(lrg_state *s, int n_rows, const int32_t *row_seq, const uint8_t *row_flags);

/* Copy tensors through ggml_backend_tensor_get/set even when their buffer
 * is host memory, to exercise the path that non-host backends take. */
void lrg_set_force_copy(lrg_state *s, bool on);

/* Stop the forward pass once the named node has been computed and its
 * operations have run (NULL or "" computes the whole graph). ggml's
 * scheduler ends the current split there, so later layers, their KV cache
 * entries and the logits are left unwritten: only for decodes whose sole
 * purpose is to read activations, followed by clearing the KV cache. On a
 * backend that splits the graph, later splits still run. */
int lrg_set_stop_after(lrg_state *s, const char *node);
int64_t lrg_stopped_count(const lrg_state *s);

/* Probe mode records the name, type and shape of every node asked about and
 * edits nothing. */
void lrg_set_probe(lrg_state *s, bool on);
int lrg_probe_count(const lrg_state *s);
int lrg_probe_entry(const lrg_state *s, int i, char *name, int name_len, int *type,
                    int64_t *ne0, int64_t *ne1);

/* Diagnostics: calls seen, errors counted inside the callback, the last
 * message, and the build information used by the import-time check. */
int64_t lrg_asked_count(const lrg_state *s);
int64_t lrg_observed_count(const lrg_state *s);
int lrg_error_count(const lrg_state *s);
const char *lrg_state_error(const lrg_state *s);
void lrg_clear_error(lrg_state *s);
const char *lrg_build_info(int field);
int lrg_check_tensor_layout(void);
