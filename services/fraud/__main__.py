from services.fraud.main import main
from shared.runtime import run

run(main)
