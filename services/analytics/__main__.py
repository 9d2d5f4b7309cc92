from services.analytics.main import main
from shared.runtime import run

run(main)
