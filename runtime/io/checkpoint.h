// Resumable training checkpoints: a directory per step whose files are checksummed and which only
// counts once its commit marker exists, so a crash mid-save never yields a half-written checkpoint
// that looks complete.
//
//   LOOM_ASSIGN_OR_RETURN(std::string params, SerializeSafetensors(named_params));
//   LOOM_RETURN_IF_ERROR(SaveCheckpoint("/ckpt", step, {{"model.safetensors", params},
//                                                       {"trainer.json", trainer_state}}));
//   LOOM_ASSIGN_OR_RETURN(std::string dir, FindLatestCheckpoint("/ckpt"));  // .../step-00000420
//   LOOM_ASSIGN_OR_RETURN(LoadedCheckpoint ckpt, LoadCheckpoint(dir));
//   const std::string& bytes = ckpt.files.at("model.safetensors");
//   LOOM_ASSIGN_OR_RETURN(SafetensorsFile model, ParseSafetensors(bytes, dir));
//
// On disk, <save_dir>/step-<step, at least 8 digits>/ holds:
//   <name>...  the files, byte for byte as given;
//   MANIFEST   {"format": "loom-checkpoint", "version": 1, "step": 420,
//               "files": [{"name": "model.safetensors", "size": 123, "crc32c": 3808858755}]}
//   COMMIT     {"format": "loom-checkpoint-commit", "manifest_crc32c": 1234567}, written last.
// Saving writes everything into <save_dir>/.tmp-step-<step>/, fsyncs each file, writes and fsyncs
// MANIFEST and then COMMIT, renames the directory into place (atomically swapping out an older
// directory of the same step) and fsyncs <save_dir>. Readers ignore ".tmp-*" directories and any
// directory without COMMIT; a failed save removes its temporary directory and leaves every earlier
// checkpoint as it was.
//
// Checkpoint directories loom creates are 0700 and its files 0600 (owner only: they hold the whole
// model and optimizer state). One process (rank 0) saves into a given save_dir at a time. Errors
// name the directory or file and the check: NotFound when there is no checkpoint;
// FailedPrecondition for an uncommitted one or a MANIFEST version this loom does not read; DataLoss
// when a committed checkpoint is damaged (missing or truncated file, checksum mismatch);
// InvalidArgument for bad arguments; file.h's errno-derived codes for I/O failures.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom::runtime::io {

// One file of a checkpoint. `name` is a plain file name: 1+ characters of [A-Za-z0-9._-], not
// starting with '.', and not MANIFEST or COMMIT.
struct CheckpointFile {
  std::string name;
  std::string bytes;
};

struct LoadedCheckpoint {
  std::string dir;  // the directory it was loaded from
  int64_t step = 0;
  std::map<std::string, std::string> files;  // name -> bytes, every file the MANIFEST lists
};

// The directory a checkpoint of `step` is committed to: "<save_dir>/step-00000420".
std::string CheckpointDir(const std::string& save_dir, int64_t step);

// Saves `files` as the checkpoint of `step` (>= 0) under `save_dir` (created if missing),
// replacing any existing checkpoint of the same step only once the new one is complete.
// InvalidArgument for a negative step or a bad or duplicate file name.
absl::Status SaveCheckpoint(const std::string& save_dir, int64_t step,
                            const std::vector<CheckpointFile>& files);

// The path of the committed "step-<N>" directory with the largest N in `save_dir`. Does not
// verify checksums (LoadCheckpoint does). NotFound if `save_dir` does not exist or holds no
// committed checkpoint.
absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& save_dir);

// Retention: removes all but the newest `keep` (>= 1) committed checkpoints in `save_dir`, oldest
// first, after the newest is committed (so one always exists). Uncommitted step directories and
// leftovers of interrupted saves are not touched (RemoveInterruptedSaves). Returns the paths
// removed.
absl::StatusOr<std::vector<std::string>> PruneCheckpoints(const std::string& save_dir, int keep);

// Removes what saves that never finished left in `save_dir` (".tmp-step-*" directories of a process
// killed mid-save; readers ignore them) and returns their paths. OK when `save_dir` does not
// exist. Call only while no save into `save_dir` is in progress.
absl::StatusOr<std::vector<std::string>> RemoveInterruptedSaves(const std::string& save_dir);

// Loads and verifies the checkpoint in `checkpoint_dir`: COMMIT present and matching MANIFEST's
// crc32c, and every file listed in MANIFEST present with the recorded size and crc32c. Files in
// the directory that MANIFEST does not list are ignored.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& checkpoint_dir);

}  // namespace loom::runtime::io
