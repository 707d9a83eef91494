// Preemption: a request to stop at the next safe point, by signal. Schedulers send SIGTERM before
// they kill a job (Slurm at the end of its time limit or on preemption, Kubernetes on eviction)
// and SIGUSR1 on request (Slurm's `--signal=USR1@<seconds>`; Open MPI's mpirun forwards SIGUSR1
// and SIGUSR2 to every rank). The program polls the request where stopping is safe (train_gpt:
// after each step, agreed by every rank, then a checkpoint; docs/faults.md).
//
//   int main() {
//     base::BlockStopSignals();          // first, before any thread exists
//     ...
//     base::StartStopSignalWatcher();    // from here the signals are requests
//     while (...) { Step(); if (base::StopSignalReceived() != 0) break; }
//   }
//
// No signal handler runs in the program's threads: the signals stay blocked in every thread and
// one watcher thread takes them with sigwait, so no system call anywhere is interrupted (EINTR)
// and nothing async-signal-unsafe can happen. A signal that arrives before the watcher starts
// stays pending and is taken when it does.
#pragma once

namespace loom::base {

// Blocks SIGTERM and SIGUSR1 in the calling thread, and so in every thread it creates later.
void BlockStopSignals();
// Starts the watcher thread (idempotent; after BlockStopSignals).
void StartStopSignalWatcher();
// Gives SIGTERM and SIGUSR1 back their default action (the process ends) for a program that will
// not poll, e.g. train_gpt --eval; pending ones take effect at once.
void UnblockStopSignals();
// The first stop signal the watcher took (SIGTERM or SIGUSR1), or 0.
int StopSignalReceived();
// Name of a stop signal for messages: "SIGTERM", "SIGUSR1", or "another signal".
const char* SignalName(int signal);

}  // namespace loom::base
