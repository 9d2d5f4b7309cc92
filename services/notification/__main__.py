from services.notification.main import main
from shared.runtime import run

run(main)
