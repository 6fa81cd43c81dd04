"""Pipeline options of the tools: Beam's own flags, local by default."""
from apache_beam.options.pipeline_options import PipelineOptions

# The DirectRunner's batch engine, named directly: `--runner=DirectRunner`
# first tries to fetch the Prism runner binary from the network and falls
# back to this engine when it cannot.
LOCAL_RUNNER = "FnApiRunner"


def local_pipeline_options(beam_args) -> PipelineOptions:
  """Beam flags (e.g. `--runner=DataflowRunner --project=...`), with
  LOCAL_RUNNER when they name no runner."""
  beam_args = list(beam_args)
  if not any(a.startswith("--runner") for a in beam_args):
    beam_args.append(f"--runner={LOCAL_RUNNER}")
  return PipelineOptions(beam_args)
