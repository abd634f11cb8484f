/* C interface of kumihimo_spshim, the only code that touches libsentencepiece (which carries
 * its own protobuf 3.14 and would clash with libtorch's 3.21). Loaded with dlopen by
 * core/text/sp_loader.cpp. Must stay plain C: no C++ types, and no exception ever crosses it. */
#ifndef KH_SPSHIM_H
#define KH_SPSHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change of a signature below; the loader refuses a shim with another value. */
#define KH_SPSHIM_ABI_VERSION 1

#if defined(KH_SPSHIM_BUILDING)
#define KH_SPSHIM_API __attribute__((visibility("default")))
#else
#define KH_SPSHIM_API
#endif

typedef struct kh_sp_model kh_sp_model; /* a loaded SentencePiece model; thread-safe to read */

/* Piece flags returned by kh_sp_piece_flags. */
#define KH_SP_NORMAL 0
#define KH_SP_CONTROL 1 /* <s>, </s>, ... decode to nothing */
#define KH_SP_UNKNOWN 2 /* <unk> */
#define KH_SP_BYTE 4    /* <0xNN> byte-fallback pieces */
#define KH_SP_UNUSED 8

KH_SPSHIM_API int kh_sp_abi_version(void);

/* The message of the last failed call on this thread ("" when none). Valid until the next
 * call into the shim from the same thread. */
KH_SPSHIM_API const char* kh_sp_last_error(void);

/* Loads a .model file; NULL on failure (see kh_sp_last_error). */
KH_SPSHIM_API kh_sp_model* kh_sp_load(const char* path);
/* Loads a serialized ModelProto held in memory; NULL on failure. */
KH_SPSHIM_API kh_sp_model* kh_sp_load_serialized(const char* data, size_t len);
KH_SPSHIM_API void kh_sp_free(kh_sp_model* model);

KH_SPSHIM_API int kh_sp_piece_size(const kh_sp_model* model);
/* Id of a piece, or -1 when the model has no such piece (unlike SentencePiece's own
 * PieceToId, which answers unk_id). */
KH_SPSHIM_API int kh_sp_piece_to_id(const kh_sp_model* model, const char* piece, size_t len);
/* Copies the piece text of `id` into buf (at most cap bytes, no terminator) and returns its
 * full length; -1 when id is out of range. Call with cap 0 to learn the length. */
KH_SPSHIM_API long kh_sp_id_to_piece(const kh_sp_model* model, int id, char* buf, size_t cap);
/* KH_SP_* flags of `id`; -1 when id is out of range. */
KH_SPSHIM_API int kh_sp_piece_flags(const kh_sp_model* model, int id);
KH_SPSHIM_API float kh_sp_score(const kh_sp_model* model, int id);
/* The model's special ids; -1 when the model has none. */
KH_SPSHIM_API int kh_sp_bos_id(const kh_sp_model* model);
KH_SPSHIM_API int kh_sp_eos_id(const kh_sp_model* model);
KH_SPSHIM_API int kh_sp_unk_id(const kh_sp_model* model);
KH_SPSHIM_API int kh_sp_pad_id(const kh_sp_model* model);

/* Encodes UTF-8 text (len bytes, need not be terminated) into ids, no bos/eos added.
 * Returns the number of ids; when that exceeds cap nothing is written and the caller calls
 * again with a buffer that large. -1 on failure. */
KH_SPSHIM_API long kh_sp_encode(const kh_sp_model* model, const char* text, size_t len, int32_t* ids,
                                size_t cap);
/* Decodes ids into UTF-8 with SentencePiece's own rules; returns the byte length, two-call
 * protocol as kh_sp_encode. -1 on failure (e.g. an id out of range). */
KH_SPSHIM_API long kh_sp_decode(const kh_sp_model* model, const int32_t* ids, size_t n, char* buf,
                                size_t cap);
/* Copies the serialized ModelProto (two-call protocol as above). */
KH_SPSHIM_API long kh_sp_serialized(const kh_sp_model* model, char* buf, size_t cap);

/* Trains a model. `flags` is spm_train's flag syntax, "--name=value" separated by blanks; a value
 * may be double-quoted ("--model_prefix=\"/a b/m\"", with \" and \\ escapes). --model_prefix is
 * required and <prefix>.model / <prefix>.vocab are written; the prefix is not stored in the
 * model, so its bytes do not depend on the output folder. --random_seed=N seeds the trainer's
 * generator (as spm_train does). When sentences is non-NULL it supplies the training text
 * (n entries of lengths[i] bytes) and --input must be absent. Returns 0, or -1 on failure. */
KH_SPSHIM_API int kh_sp_train(const char* flags, const char* const* sentences, const size_t* lengths,
                              size_t n);

#ifdef __cplusplus
}
#endif

#endif /* KH_SPSHIM_H */
