"""openrft's pieces inside other libraries' training loops: :mod:`openrft.integrations.trl` gives trl's trainers
openrft's graders and composite reward as ``reward_funcs``, and openrft samples as a trl dataset."""
