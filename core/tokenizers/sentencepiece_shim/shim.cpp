// A C interface over Debian's libsentencepiece, built as its own shared module
// (libcalibq_sentencepiece.so) and loaded at run time with dlopen(RTLD_LOCAL | RTLD_DEEPBIND)
// by core/tokenizers/sentencepiece_tokenizer.cpp.
//
// Why not link libsentencepiece into calibq: it carries its own protobuf-lite, whose exported
// symbols clash with the libprotobuf that LibTorch loads; linked together, the process dies in
// protobuf's static initialization before main (seen with gdb: DescriptorPool::
// InternalAddGeneratedFile in libsentencepiece.so.0 against libprotobuf.so.32). Loaded with
// RTLD_DEEPBIND, this module and libsentencepiece resolve their symbols in their own scope
// first, so the two protobufs never meet. Nothing here may use LibTorch.
#include <sentencepiece_processor.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {
void set_error(char* err, size_t cap, const std::string& msg) {
  if (!err || cap == 0) return;
  const size_t n = std::min(cap - 1, msg.size());
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}
}  // namespace

extern "C" {

// Version of this interface: the loader refuses a module of another.
int calibq_spm_abi() { return 1; }

void* calibq_spm_load(const char* path, char* err, size_t err_cap) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    return nullptr;
  }
  return sp.release();
}

void calibq_spm_free(void* h) { delete static_cast<sentencepiece::SentencePieceProcessor*>(h); }

// Ids of `text` (sentencepiece's Encode: normalizer, dummy prefix, model); each id goes to
// sink. Returns 0, or -1 with the message in err.
int calibq_spm_encode(void* h, const char* text, size_t len, void (*sink)(void*, int), void* ctx, char* err,
                      size_t err_cap) {
  std::vector<int> ids;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Encode(std::string(text, len), &ids);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    return -1;
  }
  for (int id : ids) sink(ctx, id);
  return 0;
}

int calibq_spm_decode(void* h, const int* ids, size_t n, void (*sink)(void*, const char*, size_t), void* ctx, char* err,
                      size_t err_cap) {
  std::string out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(h)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) {
    set_error(err, err_cap, status.ToString());
    return -1;
  }
  sink(ctx, out.data(), out.size());
  return 0;
}

int calibq_spm_size(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->GetPieceSize(); }
int calibq_spm_piece_to_id(void* h, const char* piece) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->PieceToId(piece);
}
const char* calibq_spm_id_to_piece(void* h, int id) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(h)->IdToPiece(id).c_str();
}
// 1 for control tokens (<s>, </s>, ...), 2 for the unknown token, 0 otherwise.
int calibq_spm_kind(void* h, int id) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  return sp->IsControl(id) ? 1 : sp->IsUnknown(id) ? 2 : 0;
}
int calibq_spm_bos_id(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->bos_id(); }
int calibq_spm_eos_id(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h)->eos_id(); }

}  // extern "C"
