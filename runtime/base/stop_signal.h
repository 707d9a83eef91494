// Preemption: a request to stop at the next safe point, by signal. Schedulers send SIGTERM before
// they kill a job (Slurm at the end of its time limit or on preemption, Kubernetes on eviction)
// and SIGUSR1 on request (Slurm's `--signal=USR1@<seconds>`; Open MPI's mpirun forwards SIGUSR1
// and SIGUSR2 to every rank). After InstallStopSignalHandlers those signals only set a flag: the
// program polls it where stopping is safe (train_gpt: after each step, agreed by every rank,
// then a checkpoint; docs/faults.md).
//
//   base::InstallStopSignalHandlers();
//   while (...) { Step(); if (base::StopSignalReceived() != 0) break; }
#pragma once

namespace loom::base {

// Routes SIGTERM and SIGUSR1 to the flag (idempotent). Other signals keep their handlers.
void InstallStopSignalHandlers();
// The first stop signal received since the handlers were installed (SIGTERM or SIGUSR1), or 0.
int StopSignalReceived();
// Name of a signal for messages: "SIGTERM", "SIGUSR1", ..., or "another signal".
const char* SignalName(int signal);

}  // namespace loom::base
