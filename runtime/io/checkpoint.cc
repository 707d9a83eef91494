#include "runtime/io/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/fault.h"
#include "runtime/base/status_macros.h"
#include "runtime/io/crc32c.h"
#include "runtime/io/file.h"

namespace loom::runtime::io {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr char kManifestName[] = "MANIFEST";
constexpr char kCommitName[] = "COMMIT";
constexpr char kManifestFormat[] = "loom-checkpoint";
constexpr char kCommitFormat[] = "loom-checkpoint-commit";
constexpr int64_t kManifestVersion = 1;
constexpr absl::string_view kStepPrefix = "step-";
constexpr absl::string_view kTempPrefix = ".tmp-";
// A checkpoint holds the whole model: only its owner may list or read it (files: kOwnerOnly).
constexpr int kOwnerDirectory = 0700;

std::string JoinPath(const std::string& dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

std::string StepDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

std::string Hex(uint32_t v) { return absl::StrFormat("0x%08x", v); }

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The step of a "step-<digits>" directory name; nullopt for any other name.
std::optional<int64_t> ParseStepDirName(absl::string_view name) {
  if (!absl::StartsWith(name, kStepPrefix)) return std::nullopt;
  const absl::string_view digits = name.substr(kStepPrefix.size());
  if (digits.empty()) return std::nullopt;
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  int64_t step = 0;
  if (!absl::SimpleAtoi(digits, &step)) return std::nullopt;  // overflows int64
  return step;
}

// File names are restricted to a portable set so that no name can escape the directory or
// collide with MANIFEST, COMMIT or the hidden temporary files of WriteFileAtomic.
absl::Status CheckFileName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint file name '", name, "' ", why));
  };
  if (name.empty()) return bad("is empty");
  if (name.front() == '.') return bad("starts with '.'");
  if (name == kManifestName || name == kCommitName) return bad("is reserved");
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return bad("has a character outside [A-Za-z0-9._-]");
    }
  }
  return absl::OkStatus();
}

absl::Status WithPrefix(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

// Writes the files, MANIFEST and finally COMMIT into the fresh directory `dir`. Each write is
// fsynced (file and directory) before the next, so COMMIT cannot reach the disk before the data.
absl::Status WriteCheckpointContents(const std::string& dir, int64_t step,
                                     const std::vector<CheckpointFile>& files) {
  LOOM_RETURN_IF_ERROR(MakeDirectories(dir, kOwnerDirectory));
  OrderedJson listed = OrderedJson::array();
  for (const CheckpointFile& file : files) {
    LOOM_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dir, file.name), file.bytes, kOwnerOnly));
    listed.push_back(
        {{"name", file.name}, {"size", file.bytes.size()}, {"crc32c", Crc32c(file.bytes)}});
  }
  const OrderedJson manifest = {{"format", kManifestFormat},
                                {"version", kManifestVersion},
                                {"step", step},
                                {"files", std::move(listed)}};
  const std::string manifest_text = manifest.dump(1) + "\n";
  LOOM_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dir, kManifestName), manifest_text, kOwnerOnly));
  if (const int injected = base::FaultAt("checkpoint.commit", dir); injected != 0) {
    return absl::ErrnoToStatus(injected, absl::StrCat(JoinPath(dir, kCommitName), ": write"));
  }
  const OrderedJson commit = {{"format", kCommitFormat},
                              {"manifest_crc32c", Crc32c(manifest_text)}};
  return WriteFileAtomic(JoinPath(dir, kCommitName), commit.dump() + "\n", kOwnerOnly);
}

// Renames the complete directory `temp` to `final_dir`. An existing `final_dir` (an older save of
// the same step) is swapped out atomically with renameat2(RENAME_EXCHANGE) and then deleted, so
// at every instant one complete checkpoint of the step exists.
absl::Status MoveIntoPlace(const std::string& save_dir, const std::string& temp,
                           const std::string& final_dir) {
  if (::rename(temp.c_str(), final_dir.c_str()) == 0) return FsyncDirectory(save_dir);
  if (errno != ENOTEMPTY && errno != EEXIST) {
    return absl::ErrnoToStatus(errno, absl::StrCat(final_dir, ": rename from ", temp));
  }
  if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    LOOM_RETURN_IF_ERROR(FsyncDirectory(save_dir));
    // `temp` now holds the replaced checkpoint. If removing it fails the leftover is harmless:
    // readers skip ".tmp-*" and the next save of this step removes it first.
    RemoveAll(temp).IgnoreError();
    return absl::OkStatus();
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
    return absl::ErrnoToStatus(errno, absl::StrCat(final_dir, ": exchange with ", temp));
  }
  // The filesystem cannot exchange: move the old directory aside first. A crash between the two
  // renames loses this step's old checkpoint (earlier steps are untouched).
  const std::string old = absl::StrCat(temp, ".old.", ::getpid());
  LOOM_RETURN_IF_ERROR(RemoveAll(old));
  if (::rename(final_dir.c_str(), old.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(final_dir, ": rename to ", old));
  }
  if (::rename(temp.c_str(), final_dir.c_str()) != 0) {
    const absl::Status status =
        absl::ErrnoToStatus(errno, absl::StrCat(final_dir, ": rename from ", temp));
    ::rename(old.c_str(), final_dir.c_str());  // put the old checkpoint back
    return status;
  }
  LOOM_RETURN_IF_ERROR(FsyncDirectory(save_dir));
  RemoveAll(old).IgnoreError();
  return absl::OkStatus();
}

absl::StatusOr<Json> ParseJsonFile(const std::string& text, const std::string& path) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": not valid JSON (", e.what(), ")"));
  }
}

// Reads an unsigned integer field of a JSON object, or returns nullopt.
std::optional<uint64_t> UnsignedField(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number_unsigned()) {
    return std::nullopt;
  }
  return object[key].get<uint64_t>();
}

bool StringFieldEquals(const Json& object, const char* key, absl::string_view expected) {
  return object.is_object() && object.contains(key) && object[key].is_string() &&
         object[key].get_ref<const std::string&>() == expected;
}

struct ManifestEntry {
  std::string name;
  uint64_t size = 0;
  uint32_t crc32c = 0;
};

struct Manifest {
  int64_t step = 0;
  std::vector<ManifestEntry> files;
};

absl::StatusOr<Manifest> ParseManifest(const std::string& text, const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(Json json, ParseJsonFile(text, path));
  if (!StringFieldEquals(json, "format", kManifestFormat)) {
    return absl::DataLossError(absl::StrCat(
        path, ": not a loom checkpoint manifest (no \"format\": \"", kManifestFormat, "\")"));
  }
  const std::optional<uint64_t> version = UnsignedField(json, "version");
  if (!version.has_value() || *version != kManifestVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": manifest version ", json.value("version", Json()).dump(),
                     " is not the version this loom reads (", kManifestVersion, ")"));
  }
  const std::optional<uint64_t> step = UnsignedField(json, "step");
  if (!step.has_value() || *step > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::DataLossError(absl::StrCat(path, ": missing or invalid \"step\""));
  }
  if (!json.contains("files") || !json["files"].is_array()) {
    return absl::DataLossError(absl::StrCat(path, ": missing or invalid \"files\" array"));
  }
  Manifest manifest;
  manifest.step = static_cast<int64_t>(*step);
  std::set<std::string> names;
  for (const Json& entry : json["files"]) {
    const std::optional<uint64_t> size = UnsignedField(entry, "size");
    const std::optional<uint64_t> crc = UnsignedField(entry, "crc32c");
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !size.has_value() || !crc.has_value() || *crc > std::numeric_limits<uint32_t>::max()) {
      return absl::DataLossError(
          absl::StrCat(path, ": file entry needs \"name\", \"size\" and \"crc32c\", got ",
                       entry.dump(-1, ' ', false, Json::error_handler_t::replace)));
    }
    ManifestEntry e{entry["name"].get<std::string>(), *size, static_cast<uint32_t>(*crc)};
    LOOM_RETURN_IF_ERROR(WithPrefix(CheckFileName(e.name), absl::StrCat(path, ": ")));
    if (!names.insert(e.name).second) {
      return absl::DataLossError(absl::StrCat(path, ": lists file '", e.name, "' twice"));
    }
    manifest.files.push_back(std::move(e));
  }
  return manifest;
}

}  // namespace

std::string CheckpointDir(const std::string& save_dir, int64_t step) {
  return JoinPath(save_dir, StepDirName(step));
}

absl::Status SaveCheckpoint(const std::string& save_dir, int64_t step,
                            const std::vector<CheckpointFile>& files) {
  if (step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(save_dir, ": checkpoint step must be >= 0, got ", step));
  }
  std::set<absl::string_view> names;
  for (const CheckpointFile& file : files) {
    LOOM_RETURN_IF_ERROR(WithPrefix(CheckFileName(file.name), absl::StrCat(save_dir, ": ")));
    if (!names.insert(file.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(save_dir, ": checkpoint file name '", file.name, "' appears twice"));
    }
  }
  LOOM_RETURN_IF_ERROR(MakeDirectories(save_dir, kOwnerDirectory));
  const std::string temp = JoinPath(save_dir, absl::StrCat(kTempPrefix, StepDirName(step)));
  const std::string final_dir = CheckpointDir(save_dir, step);
  const std::string context =
      absl::StrCat("saving checkpoint step ", step, " to ", final_dir, ": ");
  // A leftover from a save that crashed; never committed, so nothing refers to it.
  LOOM_RETURN_IF_ERROR(WithPrefix(RemoveAll(temp), context));
  absl::Status status = WriteCheckpointContents(temp, step, files);
  if (status.ok()) status = MoveIntoPlace(save_dir, temp, final_dir);
  if (!status.ok()) {
    RemoveAll(temp).IgnoreError();
    return WithPrefix(status, context);
  }
  return absl::OkStatus();
}

namespace {

// The "step-<N>" directories of `save_dir`: the committed ones by step (oldest first), and how many
// lack COMMIT.
struct StepDirs {
  std::vector<std::pair<int64_t, std::string>> committed;
  int uncommitted = 0;
};
absl::StatusOr<StepDirs> ListStepDirs(const std::string& save_dir) {
  LOOM_ASSIGN_OR_RETURN(const std::vector<std::string> names, ListDirectory(save_dir));
  StepDirs dirs;
  for (const std::string& name : names) {
    const std::optional<int64_t> step = ParseStepDirName(name);
    const std::string dir = JoinPath(save_dir, name);
    if (!step.has_value() || !IsDirectory(dir)) continue;
    if (IsRegularFile(JoinPath(dir, kCommitName))) {
      dirs.committed.emplace_back(*step, dir);
    } else {
      ++dirs.uncommitted;
    }
  }
  std::sort(dirs.committed.begin(), dirs.committed.end());
  return dirs;
}

}  // namespace

absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& save_dir) {
  absl::StatusOr<StepDirs> dirs = ListStepDirs(save_dir);
  if (absl::IsNotFound(dirs.status())) {
    return absl::NotFoundError(
        absl::StrCat(save_dir, ": no checkpoint: the directory does not exist"));
  }
  if (!dirs.ok()) return dirs.status();
  if (dirs->committed.empty()) {
    return absl::NotFoundError(absl::StrCat(save_dir,
                                            ": no committed checkpoint (no step-* directory "
                                            "containing ",
                                            kCommitName, "; ", dirs->uncommitted, " without it)"));
  }
  return dirs->committed.back().second;
}

absl::StatusOr<std::vector<std::string>> PruneCheckpoints(const std::string& save_dir, int keep) {
  if (keep < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("PruneCheckpoints: keep must be >= 1, got ", keep));
  }
  LOOM_ASSIGN_OR_RETURN(const StepDirs dirs, ListStepDirs(save_dir));
  const std::vector<std::pair<int64_t, std::string>>& committed = dirs.committed;
  std::vector<std::string> removed;
  for (size_t i = 0; i + keep < committed.size(); ++i) {
    // COMMIT goes first: a removal cut short leaves an uncommitted directory, never a committed
    // checkpoint with files missing.
    const std::string& dir = committed[i].second;
    if (::unlink(JoinPath(dir, kCommitName).c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(JoinPath(dir, kCommitName), ": unlink"));
    }
    LOOM_RETURN_IF_ERROR(RemoveAll(dir));
    removed.push_back(dir);
  }
  return removed;
}

absl::StatusOr<std::vector<std::string>> RemoveInterruptedSaves(const std::string& save_dir) {
  absl::StatusOr<std::vector<std::string>> names = ListDirectory(save_dir);
  if (absl::IsNotFound(names.status())) return std::vector<std::string>{};
  if (!names.ok()) return names.status();
  std::vector<std::string> removed;
  for (const std::string& name : *names) {
    if (!absl::StartsWith(name, kTempPrefix)) continue;
    LOOM_RETURN_IF_ERROR(RemoveAll(JoinPath(save_dir, name)));
    removed.push_back(JoinPath(save_dir, name));
  }
  return removed;
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& checkpoint_dir) {
  if (!IsDirectory(checkpoint_dir)) {
    return absl::NotFoundError(
        absl::StrCat(checkpoint_dir, ": checkpoint directory does not exist"));
  }
  const std::string commit_path = JoinPath(checkpoint_dir, kCommitName);
  absl::StatusOr<std::string> commit_text = ReadFile(commit_path);
  if (absl::IsNotFound(commit_text.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        checkpoint_dir, ": missing commit marker ", kCommitName,
        ": the checkpoint was not completely saved; use FindLatestCheckpoint for a committed one"));
  }
  if (!commit_text.ok()) return commit_text.status();
  LOOM_ASSIGN_OR_RETURN(Json commit, ParseJsonFile(*commit_text, commit_path));
  const std::optional<uint64_t> manifest_crc = UnsignedField(commit, "manifest_crc32c");
  if (!StringFieldEquals(commit, "format", kCommitFormat) || !manifest_crc.has_value() ||
      *manifest_crc > std::numeric_limits<uint32_t>::max()) {
    return absl::DataLossError(
        absl::StrCat(commit_path, ": malformed commit marker: ", *commit_text));
  }

  const std::string manifest_path = JoinPath(checkpoint_dir, kManifestName);
  absl::StatusOr<std::string> manifest_text = ReadFile(manifest_path);
  if (absl::IsNotFound(manifest_text.status())) {
    return absl::DataLossError(
        absl::StrCat(manifest_path, ": missing, although ", kCommitName, " exists"));
  }
  if (!manifest_text.ok()) return manifest_text.status();
  const uint32_t actual_manifest_crc = Crc32c(*manifest_text);
  if (actual_manifest_crc != *manifest_crc) {
    return absl::DataLossError(
        absl::StrCat(manifest_path, ": crc32c ", Hex(actual_manifest_crc), " does not match ",
                     Hex(static_cast<uint32_t>(*manifest_crc)), " recorded in ", kCommitName,
                     "; the manifest is corrupt"));
  }
  LOOM_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(*manifest_text, manifest_path));

  LoadedCheckpoint loaded;
  loaded.dir = checkpoint_dir;
  loaded.step = manifest.step;
  for (const ManifestEntry& entry : manifest.files) {
    const std::string path = JoinPath(checkpoint_dir, entry.name);
    absl::StatusOr<std::string> bytes = ReadFile(path);
    if (absl::IsNotFound(bytes.status())) {
      return absl::DataLossError(absl::StrCat(path, ": missing; ", kManifestName, " lists it with ",
                                              entry.size, " bytes"));
    }
    if (!bytes.ok()) return bytes.status();
    if (bytes->size() != entry.size) {
      return absl::DataLossError(absl::StrCat(path, ": size ", bytes->size(),
                                              " bytes does not match ", kManifestName, " (",
                                              entry.size, " bytes): truncated or overwritten"));
    }
    const uint32_t crc = Crc32c(*bytes);
    if (crc != entry.crc32c) {
      return absl::DataLossError(absl::StrCat(path, ": crc32c ", Hex(crc), " does not match ",
                                              kManifestName, " (", Hex(entry.crc32c),
                                              "); the file is corrupt"));
    }
    loaded.files.emplace(entry.name, *std::move(bytes));
  }
  return loaded;
}

}  // namespace loom::runtime::io
