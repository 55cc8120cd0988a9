"""The cloud tier: merges the fogs' partials into city-wide answers (README "Cloud")."""
